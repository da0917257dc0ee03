"""Sphinx configuration of the course website (`make site`, helpers/site.py).

The pages are the notebooks as `make run` executed them (build/notebooks/): nothing is executed
here. Everything a page loads ships in the wheels of requirements-teach.txt: no external script,
font or image is fetched when a page is viewed (helpers.site.external_references checks).
"""

project = "Image similarity search with ResNet50 features and Faiss"
author = "the course's authors"
copyright = "the course's authors, MIT licence"

extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["_build"]

nb_execution_mode = "off"            # make run executed them; its outputs are the measurements
nb_ipywidgets_js = {}                # the widget manager would come from a CDN: widgets need a kernel
nb_mime_priority_overrides = [       # a widget's view cannot render without a kernel: its text instead
    ("html", "application/vnd.jupyter.widget-view+json", None),
]
myst_heading_anchors = 3             # notebooks link to each other's sections

html_theme = "sphinx_book_theme"
html_title = "Image similarity search"
html_theme_options = {
    "show_navbar_depth": 1,
    "use_download_button": True,     # the executed .ipynb of each page
}
html_show_sourcelink = False
html_last_updated_fmt = None
