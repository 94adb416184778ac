"""Weather data path: Open-Meteo 2 m temperature forecasts and realised temperature as measurements.

One definition of "national temperature": the weighted mean of Open-Meteo's hourly 2 m temperature
at the weighted locations of ``POWERSENSE_WEATHER_STATIONS_FILE`` (default: the 35 stations and
weights RTE uses, ``data/weather/stations_meteo_rte_poids.csv``), for forecasts
(:mod:`shared.weather.service`, function ``poll-weather``) and for realised temperature from
Open-Meteo's archive (``python -m shared weather-backfill --archive``) alike.

What is stored (table ``measurements``, versioned by ``shared/ingest/versioning.py``; ``inserted_at``
= the fetch time on the product clock, so ``load_series(..., as_of=T)`` is "as known at T"):

============== ================================ ============== ===========================================
source         metric                           nature         what
============== ================================ ============== ===========================================
``open_meteo`` ``temperature_2m``               ``prévision``  national forecast the product uses: per
                                                               target hour, the first model of
                                                               ``POWERSENSE_WEATHER_MODELS`` that has it
``open_meteo`` ``temperature_2m_<model>``       ``prévision``  the same per model (kept for evaluation)
``open_meteo`` ``temperature_2m_realised``      ``réalisé``    archive (reanalysis) at the same locations,
                                                               same weights (backfill)
``enedis``     ``temperature_realisee_lissee``  ``réalisé``    Enedis smoothed realised national
                                                               temperature, 30 min (shipped 2020–2023)
``enedis``     ``temperature_normale_lissee``   ``normale``    Enedis smoothed normal temperature
============== ================================ ============== ===========================================

One nature per (source, metric), so the ``series`` view (best nature, latest version) reads each of
them without mixing models.
"""

from __future__ import annotations

SOURCE = "open_meteo"
FORECAST_METRIC = "temperature_2m"
FORECAST_NATURE = "prévision"
REALISED_METRIC = "temperature_2m_realised"
REALISED_NATURE = "réalisé"
ENEDIS_SOURCE = "enedis"
ENEDIS_REALISED_METRIC = "temperature_realisee_lissee"
ENEDIS_NORMAL_METRIC = "temperature_normale_lissee"
PERIMETER = "France"


def model_metric(model: str) -> str:
    """The metric of one model's national forecast (``temperature_2m_<model>``)."""
    return f"{FORECAST_METRIC}_{model}"
