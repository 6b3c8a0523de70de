"""The success criterion of a reconstruction of a simulated crystal (stdlib only, so the CLI can import it cheaply).

It succeeds when, after alignment with the truth (physics.metrics.compare_to_truth), its phase RMSE and its support
IoU are both within these bounds: the evaluations' criterion, and what the demo reports.
"""

SUCCESS = {"phase_rmse": 0.5, "iou": 0.7}


def is_success(m: dict) -> bool:
    """The criterion on compare_to_truth's (or an evaluation record's) phase_rmse and iou."""
    return m["phase_rmse"] <= SUCCESS["phase_rmse"] and m["iou"] >= SUCCESS["iou"]
