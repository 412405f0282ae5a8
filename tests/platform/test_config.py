"""Configuration: validated at start, every variable documented, compose uses only known ones."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml

from lapse.platform.config import VARIABLES, ConfigError, load_settings
from tests.conftest import ROOT


def test_defaults_are_the_embedded_postgres_broker():
    config = load_settings({})
    assert config.embedded and config.broker == "postgres"
    assert config.billing_grace == timedelta(hours=72)
    assert config.redis_namespace == "dramatiq"


def test_the_redis_broker_uses_the_configured_namespace():
    from lapse.platform.brokers import build_broker

    config = load_settings({"LAPSE_BROKER": "redis", "REDIS_URL": "redis://127.0.0.1:1/0",
                            "LAPSE_REDIS_NAMESPACE": "lapse-staging"})
    assert build_broker(config).namespace == "lapse-staging"


@pytest.mark.parametrize(("env", "variable"), [
    ({"LAPSE_BROKER": "rabbit"}, "LAPSE_BROKER"),
    ({"LAPSE_BROKER": "redis"}, "REDIS_URL"),
    ({"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL"),
    ({"DATABASE_URL": "postgresql:///nohost"}, "DATABASE_URL"),
    ({"REDIS_URL": "http://x"}, "REDIS_URL"),
    ({"LAPSE_DB_POOL_SIZE": "0"}, "LAPSE_DB_POOL_SIZE"),
    ({"LAPSE_BILLING_GRACE_HOURS": "three"}, "LAPSE_BILLING_GRACE_HOURS"),
    ({"LAPSE_ALLOW_CLOCK_OVERRIDE": "maybe"}, "LAPSE_ALLOW_CLOCK_OVERRIDE"),
    ({"LAPSE_PANEL_INBOUND_ID": "-1"}, "LAPSE_PANEL_INBOUND_ID"),
    ({"LAPSE_LOG_LEVEL": "LOUD"}, "LAPSE_LOG_LEVEL"),
    ({"LAPSE_PANEL_URL": "http://panel:2053"}, "LAPSE_PANEL_USER"),
    ({"LAPSE_PANEL_URL": "http://panel:2053", "LAPSE_PANEL_USER": "admin"}, "LAPSE_PANEL_PASSWORD"),
    ({"LAPSE_PANEL_URL": "panel:2053", "LAPSE_PANEL_TOKEN": "t"}, "LAPSE_PANEL_URL"),
    ({"LAPSE_PANEL_TIMEOUT_SECONDS": "0"}, "LAPSE_PANEL_TIMEOUT_SECONDS"),
    ({"LAPSE_REDIS_NAMESPACE": "two words"}, "LAPSE_REDIS_NAMESPACE"),
    ({"LAPSE_REDIS_NAMESPACE": ":leading"}, "LAPSE_REDIS_NAMESPACE"),
    ({"LAPSE_REDIS_NAMESPACE": "x" * 65}, "LAPSE_REDIS_NAMESPACE"),
    ({"LAPSE_TELEGRAM_RATE_PER_SECOND": "0"}, "LAPSE_TELEGRAM_RATE_PER_SECOND"),
    ({"LAPSE_TELEGRAM_CHAT_RATE_PER_SECOND": "fast"}, "LAPSE_TELEGRAM_CHAT_RATE_PER_SECOND"),
    ({"LAPSE_TELEGRAM_TIMEOUT_SECONDS": "nan"}, "LAPSE_TELEGRAM_TIMEOUT_SECONDS"),
    ({"LAPSE_TELEGRAM_BURST": "0"}, "LAPSE_TELEGRAM_BURST"),
])
def test_bad_values_name_the_variable(env, variable):
    with pytest.raises(ConfigError) as error:
        load_settings(env)
    assert error.value.variable == variable
    assert str(error.value).startswith(variable)


def test_the_default_panel_takes_a_token_instead_of_a_user_and_password():
    config = load_settings({"LAPSE_PANEL_URL": "http://panel:2053", "LAPSE_PANEL_TOKEN": "tok"})
    assert (config.panel_token, config.panel_user, config.panel_timeout_seconds) == ("tok", None, 10)


def test_secrets_never_appear_in_the_settings_repr():
    config = load_settings({"LAPSE_PANEL_PASSWORD": "hunter2", "LAPSE_CRYPTO_TOKEN": "tok-secret",
                            "LAPSE_TELEGRAM_TOKEN": "123:abc", "LAPSE_PANEL_TOKEN": "panel-tok"})
    text = repr(config)
    assert "hunter2" not in text and "tok-secret" not in text and "123:abc" not in text
    assert "panel-tok" not in text


def test_telegram_rates_are_decimal_numbers_and_a_bad_token_is_not_echoed():
    config = load_settings({"LAPSE_TELEGRAM_CHAT_RATE_PER_SECOND": "0.5"})
    assert (config.telegram_rate, config.telegram_chat_rate, config.telegram_burst) == (30, 0.5, 2)
    with pytest.raises(ConfigError) as error:
        load_settings({"LAPSE_TELEGRAM_TOKEN": "123:secret part/with a slash"})
    assert error.value.variable == "LAPSE_TELEGRAM_TOKEN" and "secret" not in str(error.value)


def test_every_variable_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [v.name for v in VARIABLES if f"`{v.name}`" not in readme]
    assert missing == []


def test_compose_services_only_set_known_variables():
    compose = yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())
    known = {v.name for v in VARIABLES}
    services = compose["services"]
    assert {"postgres", "redis", "minio", "worker", "scheduler"} <= set(services)
    for name in ("worker", "scheduler"):
        environment = services[name].get("environment", {})
        keys = set(environment) if isinstance(environment, dict) else {
            e.split("=", 1)[0] for e in environment}
        assert keys, name
        assert keys - {"TZ"} <= known, (name, keys - known)
    assert "periodiq" in " ".join(services["scheduler"]["command"])
    assert services["scheduler"]["environment"]["TZ"] == "UTC"
