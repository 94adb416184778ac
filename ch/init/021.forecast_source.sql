-- Which source each forecast row's value came from (issue 10: seasonal naive is a permanent challenger).
-- Added with alter so that existing installs upgrade in place.
alter table electricity.forecasts add column if not exists yhat_source LowCardinality(String) default 'model' after quality;
alter table electricity.forecasts add column if not exists model_weight Float32 default 1 after yhat_source;
