"""The demo: synthetic agency databases and procuratorate lists, and the end-to-end run."""
