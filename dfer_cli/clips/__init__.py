"""Which frames and which audio make a clip: the plan, the media read for it, the flags it raises."""
