"""Reading media with PyAV (decode) and the audio features the model hears (fbank)."""
