project = "glance_rbd_tracked"
copyright = "2026, the glance_rbd_tracked developers"
extensions = []
master_doc = "index"
exclude_patterns = []
html_theme = "alabaster"
