"""Asterisk ⇄ CRM telephony integration.

AMI events become calls (:mod:`ami_daemon.calls`), YAML rules decide what the
CRM gets (:mod:`ami_daemon.rules`), PostgreSQL keeps it (:mod:`ami_daemon.crm`),
and the AGI lookup routes known callers (:mod:`ami_daemon.agi`).
"""

__version__ = "0.1.0"
