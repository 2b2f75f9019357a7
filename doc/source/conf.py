# Sphinx configuration.  Build with tools/build-docs (warnings are errors).
project = "glance_rbd_tracked"
copyright = "2026, the glance_rbd_tracked developers"
# oslo_config.sphinxext renders the configuration reference from the
# oslo.config.opts entry point glance_rbd_tracked (see configuration.rst).
extensions = ["oslo_config.sphinxext"]
root_doc = "index"
exclude_patterns = []
html_theme = "alabaster"
html_static_path = []
