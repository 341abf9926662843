"""What people look at: an HTML report per file (a summary, the video, the lanes of who speaks and who shows
what, a card per person), an index for a folder, and the video annotated with each person's box and call."""
