"""Reports: terminal tables, Markdown, HTML and plots."""
