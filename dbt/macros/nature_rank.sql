{#- Rank of an eco2mix nature: définitives (3) > consolidées (2) > temps réel (1) > anything else (0).
    Same rule as shared/series.py, so the analytics series equals the one the functions forecast. -#}
{% macro nature_rank(column='nature') -%}
multiIf({{ column }} like 'Données définitives%', 3, {{ column }} like 'Données consolidées%', 2,
        {{ column }} like 'Données temps réel%', 1, 0)
{%- endmacro %}
