"""The mesh model and its loading: mesh.yaml in, a typed immutable Mesh or located problems out."""

from meshdev.config.load import load_mesh, parse_mesh
from meshdev.config.model import (
    Authorization,
    Ingress,
    IngressRoute,
    Match,
    Mesh,
    Policy,
    Route,
    Security,
    Service,
    Version,
)
from meshdev.config.problems import MeshInvalid, Pos, Problem

__all__ = [
    "Authorization",
    "Ingress",
    "IngressRoute",
    "Match",
    "Mesh",
    "MeshInvalid",
    "Policy",
    "Pos",
    "Problem",
    "Route",
    "Security",
    "Service",
    "Version",
    "load_mesh",
    "parse_mesh",
]
