"""The documentation site: Sphinx with MyST (the pages stay Markdown, readable on GitHub
and in a clone), furo, autodoc for the API reference and sphinx-gallery for the executed
examples of examples/. Built with warnings as errors by tests/test_docs.py."""
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

project = "refbnn"
author = "the refbnn authors"
copyright = "2026, the refbnn authors"

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.mathjax", "sphinx_gallery.gen_gallery"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
html_theme = "furo"
html_title = "refbnn"
myst_heading_anchors = 3
exclude_patterns = ["_build", "paper-run/*/models", "**/data", "sg_execution_times.rst"]
autodoc_member_order = "bysource"
autodoc_typehints = "none"
# Pages link to files of the repository that are not pages of the site (examples, tests,
# proofs, benchmarks); MyST cannot resolve those, so it would warn. tests/test_docs.py
# checks that every such link resolves inside the repository instead.
suppress_warnings = ["myst.xref_missing"]           # the signatures carry them; the rendered page stays short

sphinx_gallery_conf = {
    "examples_dirs": os.path.join(ROOT, "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/(margin_by_hand|theorem1_by_hand|importance_by_hand|bit_flip_training|"
                        r"find_a_bug|protection)\.py$",
    "ignore_pattern": r"(independent_metrics|buggy_metrics)\.py$",      # commands, not stories
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "plot_gallery": "True",
    "min_reported_time": 0,
    "show_memory": False,
    "write_computation_times": False,
}
