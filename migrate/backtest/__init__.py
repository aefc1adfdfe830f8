"""``migrate backtest``: both paths' answers to past requests, from history, in the shadow log's format."""
