"""The measurements of one run: every value per case, figure, metric, target and round, the cases
skipped with their reason, and the summaries the report prints (median, min, max over rounds, and the
ratio to direct PostgreSQL computed round by round). Not for: formatting (see report.py)."""

import json
import statistics


class Summary:
    def __init__(self, values):
        self.values = list(values)
        self.median = statistics.median(self.values)
        self.min = min(self.values)
        self.max = max(self.values)


class Results:
    def __init__(self, facts):
        self.facts = facts
        self.values = []  # dicts: case, figure, metric, target, round, value
        self.skipped = {}  # case -> reason
        self.notes = {}  # case -> list of lines

    def add(self, case, figure, metric, target, round_no, value):
        if value is not None:
            self.values.append(
                dict(case=case, figure=figure, metric=metric, target=target, round=round_no,
                     value=value)
            )

    def skip(self, case, reason):
        self.skipped[case] = reason

    def note(self, case, line):
        self.notes.setdefault(case, []).append(line)

    def figures(self, case):
        """(figure, metric) pairs of a case, in the order they were first measured."""
        seen = []
        for v in self.values:
            key = (v["figure"], v["metric"])
            if v["case"] == case and key not in seen:
                seen.append(key)
        return seen

    def targets(self, case):
        seen = []
        for v in self.values:
            if v["case"] == case and v["target"] not in seen:
                seen.append(v["target"])
        return seen

    def _by_round(self, case, figure, metric, target):
        return {
            v["round"]: v["value"]
            for v in self.values
            if (v["case"], v["figure"], v["metric"], v["target"]) == (case, figure, metric, target)
        }

    def summary(self, case, figure, metric, target):
        values = list(self._by_round(case, figure, metric, target).values())
        return Summary(values) if values else None

    def ratio(self, case, figure, metric, target, baseline):
        """target / baseline, round by round (the two were measured back to back)."""
        mine = self._by_round(case, figure, metric, target)
        base = self._by_round(case, figure, metric, baseline)
        ratios = [mine[r] / base[r] for r in mine if r in base and base[r]]
        return Summary(ratios) if ratios else None

    @classmethod
    def load(cls, path):
        with open(path) as f:
            data = json.load(f)
        results = cls(data["facts"])
        results.values = data["values"]
        results.skipped = {int(k): v for k, v in data["skipped"].items()}
        results.notes = {int(k): v for k, v in data["notes"].items()}
        return results

    def save(self, path):
        with open(path, "w") as f:
            json.dump(
                dict(facts=self.facts, values=self.values, skipped=self.skipped, notes=self.notes),
                f,
                indent=1,
            )
