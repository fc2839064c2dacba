"""What a run's configuration may be, checked before anything is written. Torch-free.

- `rules.py`: what one value may be (a number in a range, a choice, a list ...) and how it is shown
- `keys.py`: the rule of every config key (`RULES`, its choices read from the declarations of
  `kinds.py`, `models/families.py` and `datasets.py`) and of the launchers' values
- `checks.py`: what several keys must agree on (`CROSS_CHECKS`), and the one home of the budget's
  rules (`budget_runs`, `budget_problem`)
- `unread.py`: settings a command line gives that the run will not read (a warning)
- `preflight.py`: every job of a command composed and checked before anything is written
"""
