"""Forecasting: the two-stage NeuralProphet model, the seasonal-naive baseline, the forecast stage, the backtest."""
