"""PeopleConfig: who is analysed (every person or the main face), how many, and whose voice each hears."""

from __future__ import annotations

from dataclasses import dataclass, field

from dfer_cli.errors import UsageError
from dfer_cli.people.attribution import AttributionConfig
from dfer_cli.people.vad import VadConfig

PEOPLE_MODES = ("all", "main")
VOICE_MODES = ("auto", "all")


@dataclass(frozen=True)
class PeopleConfig:
    # "all": every person present in enough frames gets a result; "main": the main face alone, as the
    # benchmarks' single-face clips are read (no people list, no speech attribution).
    mode: str = "all"
    max_people: int = 8  # analysed at most, ranked by presence times size; the record counts them all
    # "auto": each person hears the speech attributed to them (one visible face hears everything, as
    # the model was trained); "all": everyone hears the whole soundtrack (the paper's behaviour).
    voice: str = "auto"
    # Frames of video at its own rate that the lips are read on, per speech segment: its frames, cut
    # down to this many around its middle when it is longer (speaker_bench: 50 score as all of them).
    max_frames: int = 75
    vad: VadConfig = field(default_factory=VadConfig)
    attribution: AttributionConfig = field(default_factory=AttributionConfig)

    def __post_init__(self) -> None:
        if self.mode not in PEOPLE_MODES:
            raise UsageError(f"--people {self.mode!r}: expected one of {', '.join(PEOPLE_MODES)}")
        if self.voice not in VOICE_MODES:
            raise UsageError(f"--voice {self.voice!r}: expected one of {', '.join(VOICE_MODES)}")
        if self.max_people < 1:
            raise UsageError(f"--max-people {self.max_people}: at least 1")
        if self.mode == "main" and self.max_people not in (1, PeopleConfig.max_people):
            raise UsageError(f"--max-people {self.max_people} with --people main: main analyses one "
                             "face; leave out --max-people, or use --people all")

    def record_options(self) -> dict:
        """The options that shape a record (a run resumed with others would mix records)."""
        return {"people": self.mode, "voice": self.voice, "max_people": self.max_people}
