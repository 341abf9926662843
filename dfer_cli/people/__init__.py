"""Who is on screen and who speaks: face landmarks, speech presence, speaker attribution."""
