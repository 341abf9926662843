"""What predict reports: the records, their writers, and the timeline picture."""
