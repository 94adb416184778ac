{#- dbt-clickhouse 1.10.3's exchange_tables_atomic (include/clickhouse/macros/adapters.sql), with one change: on a
    cluster it waits for every replica to hold the NEW table (``old_relation``: the rebuilt ``__dbt_backup``) before
    the swap. The adapter's waits for the table being replaced, so a host could serve a half-fetched mart right
    after the swap (dbt inserts on one host; the others fetch the parts from it). The root project's macro is the
    one dbt resolves. -#}
{% macro exchange_tables_atomic(old_relation, target_relation, obj_types='TABLES') %}
  {%- if adapter.get_clickhouse_cluster_name() is not none and obj_types == 'TABLES' and 'Replicated' in engine_clause() %}
    {%- call statement('exchange_table_sync_replica') -%}
      SYSTEM SYNC REPLICA {{ on_cluster_clause(old_relation) }} {{ old_relation.schema }}.{{ old_relation.identifier }}
    {% endcall %}
  {%- endif %}
  {%- call statement('exchange_tables_atomic') -%}
    EXCHANGE {{ obj_types }} {{ old_relation }} AND {{ target_relation }} {{ on_cluster_clause(target_relation) }}
  {% endcall %}
{% endmacro %}
