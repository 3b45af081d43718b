"""The dashboard's widgets: header, keys bar, events, logs, and the start-up progress view."""
