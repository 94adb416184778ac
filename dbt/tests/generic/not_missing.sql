{% test not_missing(model, column_name) %}
-- A value that is absent. ClickHouse writes the type's default in place of a NULL in a column that cannot hold one
-- ('' for a string, 0 for a number, 1970-01-01 for a date or time: input_format_null_as_default), so dbt's not_null
-- can never fail there: this test fails on NULL and on that default. For columns where the default is no real value
-- (keys, ids, names, times, versions counted from 1, load values); not for counts, horizons or ratios, where 0 is one.
select {{ column_name }}
from {{ model }}
where isNull({{ column_name }})
   or assumeNotNull({{ column_name }}) = defaultValueOfArgumentType(assumeNotNull({{ column_name }}))
{% endtest %}
