"""The paper book: target weights from the day's validated signals, orders placed at the close
for the next session's open, fills with explicit costs, a book that never rewrites a placed
order, and its reconciliation against the backtest of the same weights (docs/paper.md)."""
