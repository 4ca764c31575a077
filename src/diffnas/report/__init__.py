"""What a finished (or running) search leaves for people: reports, exports, the dashboard.

- `source`: a search run folder read into plain rows (the only module that knows where the
  search keeps things);
- `plots`: matplotlib figures as PNG bytes;
- `page`: the self-contained HTML page and the Markdown summary (`write_report`);
- `markdown`: Markdown tables (the experiments' summaries use them too);
- `terminal`: the `diffnas status` table, 80 columns wide;
- `export`: one trial as a diffusers `DDPMPipeline` folder;
- `dashboard`: sample grids attached to the Optuna study as artifacts (optuna-dashboard).
"""
