"""The dashboard (Textual): one app (app.py) composing a session controller (controllers.py:
`meshdev up`, or watching proxies started elsewhere), its screens, widgets and tables, and the
Textual-free logic beside them (logic/).
"""
