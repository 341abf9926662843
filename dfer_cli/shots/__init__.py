"""Where the cuts are: shot boundaries found in the small frames of what predict decodes (detect.py), by
TransNet V2 (transnet.py) or colour histograms (histogram.py)."""
