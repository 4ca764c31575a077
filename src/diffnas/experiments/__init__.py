"""Experiments that test DiffNAS's two claims on the user's own task.

- `proxy_check`: does the cheap proxy (a short run scored by RFID, KID or the training loss)
  rank architectures the way a longer reference run does, and at what fraction of its compute?
- `tabulate`: every architecture of a small space under proxy settings and a reference, with
  several seeds, as a table (`diffnas.execute.table`) that searches can be answered from;
  `proxy_check` runs the same engine over a sample of architectures (`study` holds their
  shared options).
- `trust`: how far a search's winner can be trusted - its proxy's Kendall tau on the space's
  bundled table, next to the reference's ceiling - for `diffnas status` and `report`.
- `compare`: do proposers (the LLM with memory, random, TPE, evolution) find good
  architectures with less compute, over several seeds?

They sit on top of the pipeline (space -> model -> train -> evaluate -> gate -> propose ->
search -> execute): they evaluate candidates with the search's own evaluation and searches,
never a copy.
"""
