"""Detection: anomalies from forecast residuals, the z-score baseline, data quality, drift, evaluation."""
