"""Caller lookup and routing while the call rings (DESIGN "contract: AGI").

- :mod:`.variables` — the dialplan contract: variable and context names;
- :mod:`.protocol` — the AGI wire format, Asterisk's side treated as untrusted;
- :mod:`.decision` — pure: environment + CRM answer + rules → variables;
- :mod:`.routing` — the routing flags and exception phones, compiled from the rules;
- :mod:`.lookup` — the dialogue both entry points run, with its time budget;
- :mod:`.owners` — the CRM source: pooled + cached + fail-fast, or one connection;
- :mod:`.server`, :mod:`.crm_server` — FastAGI (``agi://HOST:4573/crm_lookup``);
- :mod:`.classic`, :mod:`.classic_settings` — ``agi_scripts/crm_lookup.py`` over pyst2.
"""
