"""What a finished (or running) search leaves for people: reports and exports.

- `source`: a search run folder read into plain rows (the only module that knows where the
  search keeps things);
- `proxy_study`: a proxy-check run folder (or pairs) read for `--proxy-check`;
- `plots`: matplotlib figures as PNG bytes;
- `page`: the self-contained HTML page and the Markdown summary (`write_report`);
- `terminal`: the `diffnas status` table, 80 columns wide;
- `export`: one trial as a diffusers `DDPMPipeline` folder.

Markdown tables and literal text in figures come from `diffnas.markup`, which the
experiments' summaries use too (the experiments never import the report).
The sample grids in optuna-dashboard are attached by the search itself (`search.artifacts`).
"""
