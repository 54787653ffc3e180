"""Reads a resnet-mpi metrics log (DIR/metrics.jsonl) as one uninterrupted run: the reader that
plot.py and early-stop-replay.py share.

A run resumed from a checkpoint writes {"event": "resume", "from_step": N, ...}: the points the earlier
process had logged after step N belong to a continuation that was thrown away, so they are dropped and
the resumed process's points take their place. In logs without a marker, a step that does not increase
starts a new segment the same way. A line that is not JSON (a run killed while writing it) is skipped
with a note on stderr.
"""
import json
import sys


class LogError(Exception):
    """A log this reader cannot make sense of; the message names the file and line."""


def read_points(path, program):
    """(points, restarts): the metrics lines (dicts with at least an integer step and epoch) in step
    order, and the steps at which a later process took over. `program` prefixes the notes on stderr.
    Raises LogError for a file that cannot be read or a line that is neither a metrics line nor a
    resume marker, OSError's message included."""
    points, restarts = [], []
    try:
        with open(path) as f:
            lines = list(f)
    except OSError as e:
        raise LogError(f"{path}: {e.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            print(f"{program}: {path}:{number}: skipping a line that is not JSON (a run killed while writing?)",
                  file=sys.stderr)
            continue
        if not isinstance(entry, dict):
            raise LogError(f"{path}:{number}: not a metrics line")
        if entry.get("event") == "resume":
            try:
                start = int(entry["from_step"])
            except (ValueError, KeyError, TypeError):
                raise LogError(f"{path}:{number}: a resume line without from_step") from None
            points = [p for p in points if p["step"] <= start]
            restarts.append(start)
            continue
        try:
            entry["step"], entry["epoch"] = int(entry["step"]), int(entry["epoch"])
        except (ValueError, KeyError, TypeError):
            raise LogError(f"{path}:{number}: not a metrics line with step and epoch") from None
        if points and entry["step"] <= points[-1]["step"]:
            points = [p for p in points if p["step"] < entry["step"]]
            restarts.append(entry["step"])
        points.append(entry)
    return points, restarts
