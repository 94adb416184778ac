-- Whether a forecast run used the weather (issue 12): 'used' = the weather model with the temperature forecast as
-- known at the run; otherwise why not, and the values are the weather-free model's (or the simple models'):
-- 'off' (POWERSENSE_FORECAST_WEATHER=false), 'missing' (no weather features), 'stale' (newest temperature forecast
-- older than POWERSENSE_WEATHER_MAX_AGE_H), 'incomplete' (it does not cover every target step), 'no_model' (no
-- weather model yet), 'failed' (the weather model raised), 'unused' (a simple-model fallback run).
-- Added with alter so that existing installs upgrade in place (older rows: 'off').
alter table electricity.forecasts add column if not exists weather_status LowCardinality(String) default 'off' after model_weight;
