"""Which audio channel carries the voice: predict hears that one, where the benchmarks hear channel 0."""

# Films and TV mix dialogue to the front-centre channel (5.1, 7.1); a stereo or dual-mono recording may
# carry a voice on one side only (a lapel microphone on one input). The model was trained on one channel
# at its own level (channel 0 of film mixes), so predict hears one channel, not a downmix, which would
# lower a one-sided voice by 6 dB and cancel what is out of phase: the centre where it has sound, else
# the first channel nearly as loud as the loudest (channel 0 of ordinary stereo, as before). LFE never
# carries speech. Evaluate and the training cache keep channel 0, as the reference did.

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dfer_cli.media.fbank import is_silent, rms_dbfs

FIRST = "first"  # the benchmarks' channel 0
VOICE = "voice"  # predict: the channel that carries the voice
# A channel this close to the loudest one counts as loud: ordinary stereo keeps channel 0.
NEARLY_AS_LOUD_DB = 6.0
_CENTRE, _LOW_FREQUENCY = "FC", "LFE"


def voice_channel(wave: np.ndarray, names: Sequence[str] = ()) -> tuple[np.ndarray, str]:
    """The channel of (channels, samples) that the model hears, and its name: the layout's ("FR",
    "FC"), "mono" for a one-channel track, "c<i>" where the layout names none."""
    wave = np.atleast_2d(wave)
    if len(wave) == 1:
        return wave[0], "mono"
    names = list(names) if len(names) == len(wave) else [f"c{i}" for i in range(len(wave))]
    if _CENTRE in names and not is_silent(wave[names.index(_CENTRE)]):
        chosen = names.index(_CENTRE)
    else:
        levels = [rms_dbfs(w) if name != _LOW_FREQUENCY else -np.inf for w, name in zip(wave, names, strict=True)]
        chosen = next(i for i, level in enumerate(levels) if level >= max(levels) - NEARLY_AS_LOUD_DB)
    return wave[chosen], names[chosen]
