"""The CRM in PostgreSQL: schema migrations, the phone lookup, imports, writes."""
