"""API keys (scopes, several keys, rate limits, key files) and ``lsr serve`` settings from
the environment and a config file, in process."""

import hashlib
import time

import pytest

from lsr.errors import ConfigError
from lsr.service.auth import AuthError, KeyRing, RateLimiter, load_key_ring, parse_keys
from lsr.service.cli import build_parser
from lsr.service.serve_config import apply


def _h(key: str) -> dict:
    return {b"x-api-key": key.encode()}


def test_scopes_and_several_keys():
    ring = load_key_ring(
        api_key="old-default-key",
        environ={"LSR_API_KEYS": '[{"name": "search", "key": "reader-key-1", "scopes": ["read"]}]'},
    )
    assert ring.authorize({}, "read") == "anonymous"  # reads are open
    assert ring.authorize(_h("reader-key-1"), "read") == "search"
    assert ring.authorize(_h("old-default-key"), "admin") == "default"
    for headers, scope, status in [
        ({}, "write", 401),
        (_h("nope-nope-nope"), "write", 401),
        (_h("reader-key-1"), "write", 403),
        (_h("reader-key-1"), "admin", 403),
    ]:
        with pytest.raises(AuthError) as e:
            ring.authorize(headers, scope)
        assert e.value.status == status
    protected = load_key_ring(api_key="old-default-key", protect_reads=True, environ={})
    with pytest.raises(AuthError):
        protected.authorize({}, "read")
    assert "for reads and writes" in protected.describe()
    assert KeyRing().authorize({}, "write") == "anonymous"  # no keys: nothing is protected


def test_rate_limits_per_key_and_for_anonymous_requests():
    ring = KeyRing(parse_keys(
        "[{name: slow, key: slow-key-1, scopes: [read], rate_per_second: 2, burst: 2}]", "t"
    ), anonymous_rate=1)  # fmt: skip
    assert [ring.authorize(_h("slow-key-1"), "read") for _ in range(2)] == ["slow"] * 2
    with pytest.raises(AuthError) as e:
        ring.authorize(_h("slow-key-1"), "read")
    assert e.value.status == 429 and 0 < e.value.retry_after <= 0.5
    assert e.value.headers() == {"Retry-After": "1"}
    assert ring.authorize({}, "read") == "anonymous"  # another bucket
    with pytest.raises(AuthError):
        ring.authorize({}, "read")
    time.sleep(0.55)
    assert ring.authorize(_h("slow-key-1"), "read") == "slow"


def test_token_bucket_refills_at_its_rate():
    bucket = RateLimiter(rate=100, burst=1)
    assert bucket.take() == 0
    assert 0 < bucket.take() <= 0.01
    time.sleep(0.02)
    assert bucket.take() == 0


def test_key_files_hold_hashes_and_are_checked(tmp_path):
    secret = "a-long-secret"
    path = tmp_path / "keys.json"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    path.write_text(f'{{"keys": [{{"name": "ops", "key_sha256": "{digest}", '
                    '"scopes": ["admin"]}]}', encoding="utf-8")  # fmt: skip
    ring = load_key_ring(keys_file=path, environ={})
    assert ring.authorize(_h(secret), "admin") == "ops"
    for text, message in [
        ("keys: []", "expected a list of keys"),
        ("- {name: a, scopes: [read]}", "exactly one of 'key' and 'key_sha256'"),
        ("- {name: a, key_sha256: abc, scopes: [read]}", "64 hexadecimal digits"),
        ("- {name: a, key: long-secret, scopes: [read], role: x}", "unknown fields ['role']"),
        ("- {name: a, key: long-secret, scopes: read}", "'scopes' must be"),
        ("- {name: a, key: long-secret, scopes: [read]}\n- {name: b, key: long-secret, "
         "scopes: [write]}", "same secret"),  # fmt: skip
        ("{not yaml", "not valid JSON or YAML"),
    ]:
        with pytest.raises(ConfigError) as e:
            KeyRing(parse_keys(text, "keys.yaml"))
        assert message in str(e.value), (text, str(e.value))
    with pytest.raises(ConfigError, match="cannot read it"):
        load_key_ring(keys_file=tmp_path / "missing.yaml", environ={})
    with pytest.raises(ConfigError, match="needs an API key"):
        load_key_ring(protect_reads=True, environ={})


def _serve_args(argv, environ, tmp_path, config_text=None):
    parser = build_parser()
    if config_text is not None:
        config = tmp_path / "serve.yaml"
        config.write_text(config_text, encoding="utf-8")
        argv = [*argv, "--config", str(config)]
    args = parser.parse_args(["serve", "idx", *argv])
    apply(parser.serve_parser, args, ["serve", "idx", *argv], environ)
    return args


def test_flags_win_over_the_environment_which_wins_over_the_file(tmp_path):
    text = "port: 9000\nmax-k: 50\naccess_log: json\nprotect_reads: true\ncors_origin: [a, b]\n"
    args = _serve_args(["--port", "9100"], {"LSR_MAX_K": "40", "LSR_PORT": "9200"}, tmp_path, text)
    assert (args.port, args.max_k, args.access_log) == (9100, 40, "json")
    assert args.protect_reads is True and args.cors_origin == ["a", "b"]
    args = _serve_args(["--port=9100"], {"LSR_READ_ONLY": "yes", "LSR_CORS_ORIGIN": "x,y"},
                       tmp_path)  # fmt: skip
    assert args.port == 9100 and args.read_only is True and args.cors_origin == ["x", "y"]
    assert _serve_args([], {}, tmp_path).port == 8000
    repeated = _serve_args(["--cors-origin", "a", "--cors-origin=b"], {"LSR_CORS_ORIGIN": "z"},
                           tmp_path)  # fmt: skip
    assert repeated.cors_origin == ["a", "b"]
    abbreviated = _serve_args(["--flush", "5"], {"LSR_FLUSH_THRESHOLD": "9"}, tmp_path)
    assert abbreviated.flush_threshold == 5  # argparse took --flush for --flush-threshold


@pytest.mark.parametrize(
    ("environ", "config_text", "message"),
    [
        ({"LSR_PORT": "eighty"}, None, "$LSR_PORT: must be a positive integer"),
        ({"LSR_READ_ONLY": "maybe"}, None, "$LSR_READ_ONLY: expected true or false"),
        ({}, "access_log: xml\n", "access_log: must be one of off, text, json"),
        ({}, "colour: blue\n", "lsr serve has no option colour"),
        ({}, "- a list\n", "expected a mapping"),
        ({}, "port: [1, 2]\n", "expected a single value"),
    ],
)
def test_bad_settings_name_where_they_came_from(tmp_path, environ, config_text, message):
    with pytest.raises(ConfigError) as e:
        _serve_args([], environ, tmp_path, config_text)
    assert message in str(e.value)
