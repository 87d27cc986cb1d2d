"""Every mode side by side: convert, measure, recommend."""
