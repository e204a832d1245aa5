"""Secrets kept out of what the jobs show: setting names whose values are secrets, and
secrets inside values (a URI's password, ``password=``, a SAS signature). No Spark here,
so the Spark-free parts (the MLflow pyfunc model, the registry) use it too."""
from __future__ import annotations

import re

#: Setting names whose values are secrets: keys, secrets, tokens, passwords (also pwd and
#: passwd), credentials, Azure SAS settings (fs.azure.sas.<container>.<account>...) and
#: JAAS configurations (Kafka's SASL login).
SECRET_NAME = re.compile(r"key|secret|token|passw(or)?d|pwd|credential|(^|\.)sas\.|jaas",
                         re.IGNORECASE)
#: Secrets inside values: the password of user:password@ in a URI, and password=, pwd=,
#: sig= (a SAS token's signature), secret= and token= parameters (JDBC URLs, SAS strings).
SECRET_IN_VALUE = re.compile(
    r"(?i)(://[^/\s:@]+:)[^@\s/]+(?=@)|\b((?:password|passwd|pwd|sig|secret|token)=)[^;&\s]+")
REDACTED = "*********(redacted)"

#: The same names and value parameters for Spark's own redaction (UI, event log, its logs).
SPARK_REDACTION_REGEX = f"(?i){SECRET_NAME.pattern}|password=|sig="


def redact(name: str, value) -> str:
    """The value to log for a setting: hidden when the name looks like a secret, else with
    the secrets inside it hidden (:func:`redact_text`)."""
    return REDACTED if SECRET_NAME.search(name) else redact_text(value)


def redact_text(value) -> str:
    """``value`` as text with the secrets inside it hidden: a URI's user:password@, and
    password=, pwd=, sig=, secret= or token= parameters."""
    return SECRET_IN_VALUE.sub(lambda m: (m.group(1) or m.group(2)) + REDACTED, str(value))
