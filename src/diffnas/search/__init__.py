"""The search loop: rounds of propose -> check -> evaluate -> record, kept in an Optuna study."""
