"""deploy/: the container image, the compose file, the process settings and the TLS front end.

There is no container engine where this suite runs, so the image is not built here. Instead the
Dockerfile is parsed and its invariants checked, and the steps it runs are run here the same way
(the dependency list it extracts, collectstatic under the production settings with throw-away
secrets, gunicorn with deploy/gunicorn.conf.py answering the image's health check).
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.test_settings_production import SECRETS, assert_no_secret, production_env

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent

# --- Dockerfile ---------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = " ".join(current.split()).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        current = ""
    assert not current, "dangling continuation line"
    return instructions


def stages() -> list[tuple[str, list[tuple[str, str]]]]:
    """[(stage name, its instructions)] in order; ARGs before the first FROM are dropped."""
    result: list[tuple[str, list[tuple[str, str]]]] = []
    for keyword, args in dockerfile_instructions():
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", args, re.I)
            assert match, f"every stage is named: FROM {args}"
            result.append((match.group(2), []))
        elif result:
            result[-1][1].append((keyword, args))
    return result


def test_dockerfile_is_multi_stage_with_a_slim_non_root_runtime():
    instructions = dockerfile_instructions()
    names = [name for name, _ in stages()]
    assert names == ["builder", "runtime"]
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS runtime"]
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim-bookworm") in instructions

    runtime = dict(stages())["runtime"]
    keywords = [keyword for keyword, _ in runtime]
    # The last USER is numeric and not root, and nothing runs as root after it.
    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users == ["10001:10001"]
    after_user = keywords[keywords.index("USER") :]
    assert "RUN" not in after_user
    assert "COPY" not in after_user
    assert "useradd --system --uid 10001" in " ".join(a for k, a in runtime if k == "RUN")
    # The virtualenv comes from the builder; no compilers or package installs at run time.
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in runtime
    runtime_runs = " ".join(args for keyword, args in runtime if keyword == "RUN")
    for forbidden in ("apt-get", "build-essential", "gcc", "pip install"):
        assert forbidden not in runtime_runs
    assert keywords[-3:] == ["EXPOSE", "HEALTHCHECK", "CMD"]


def test_dockerfile_exposes_the_port_and_checks_health_on_healthz():
    runtime = dict(stages())["runtime"]
    assert ("EXPOSE", "8000") in runtime
    env = " ".join(args for keyword, args in runtime if keyword == "ENV")
    assert "GUNICORN_BIND=0.0.0.0:8000" in env
    assert "DJANGO_SETTINGS_MODULE=patientportal.settings.production" in env
    (healthcheck,) = [args for keyword, args in runtime if keyword == "HEALTHCHECK"]
    assert healthcheck.startswith("--interval=30s --timeout=5s --start-period=30s --retries=3 CMD")
    assert healthcheck.endswith('CMD ["python", "/app/deploy/healthcheck.py"]')
    assert '"GET", "/healthz"' in (DEPLOY / "healthcheck.py").read_text()
    assert ("CMD", '["/app/deploy/bin/web"]') in runtime


def test_no_secret_is_baked_into_the_image():
    instructions = dockerfile_instructions()
    secret_names = ("SECRET_KEY", "VAULT_KEYS", "PASSWORD", "TOKEN", "DATABASE_URL", "REDIS_URL")
    for keyword, args in instructions:
        if keyword in {"ENV", "ARG", "LABEL"}:
            for name in secret_names:
                assert name not in args, f"{keyword} {args}"
    runs_with_secrets = [
        args for keyword, args in instructions if keyword == "RUN" and "SECRET_KEY" in args
    ]
    # Only the collectstatic step sees secrets, generated on the spot, never literal.
    assert len(runs_with_secrets) == 1
    (step,) = runs_with_secrets
    assert step.endswith("python manage.py collectstatic --no-input --verbosity 1")
    assert "SECRET_KEY=\"$(python -c 'import secrets; print(secrets.token_urlsafe(64))')\"" in step
    assert "os.urandom(32)" in step
    assert not re.search(r"[A-Za-z0-9+/]{40,}={0,2}", step), "no literal key material"
    # Local configuration and key material are kept out of the build context.
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for pattern in (".env", "**/.env", ".git", ".venv", "var", "tests", "deploy/nginx/certs"):
        assert pattern in ignored


def test_dockerfile_copies_only_what_exists_and_is_not_ignored():
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for keyword, args in dockerfile_instructions():
        if keyword != "COPY" or args.startswith("--from="):
            continue
        *sources, _destination = shlex.split(args)
        for source in sources:
            path = source.rstrip("/")
            assert (ROOT / path).exists(), source
            assert not any(fnmatch.fnmatch(path, pattern) for pattern in ignored), source
    for name in ("web", "worker", "beat", "migrate", "static"):
        executable = DEPLOY / "bin" / name
        assert os.access(executable, os.X_OK), executable
        assert executable.read_text().startswith("#!/bin/sh\n")
        subprocess.run(["sh", "-n", str(executable)], check=True)


# --- the sandbox stays out of the image --------------------------------------------------------


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(exception, regex) per .dockerignore line, by Docker's rules, which are not .gitignore's:
    a pattern is relative to the context root, `*` and `?` stop at `/`, `**` spans directories,
    a matching directory excludes everything under it, a `!` line re-includes, the last match
    wins."""
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            else:
                regex += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
                i += 1
        rules.append((exception, re.compile(regex + r"\Z")))
    return rules


def in_build_context(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for exception, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not exception
    return not excluded


def test_the_sandbox_is_not_in_the_build_context_so_not_in_the_image():
    rules = dockerignore_rules()
    assert "fhirlink/sandbox" in (ROOT / ".dockerignore").read_text().splitlines()
    # The matcher itself, on the lines that were there before.
    assert not in_build_context(".git/config", rules)
    assert not in_build_context("fhirlink/__pycache__/vault.cpython-311.pyc", rules)
    assert in_build_context("deploy/nginx/templates/default.conf.template", rules)
    shipped = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "fhirlink").rglob("*")
        if path.is_file() and in_build_context(path.relative_to(ROOT).as_posix(), rules)
    }
    sandbox = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "fhirlink" / "sandbox").rglob("*")
        if path.is_file()
    }
    assert "fhirlink/sandbox/views_fhir.py" in sandbox
    assert not shipped & sandbox
    assert not [path for path in shipped if path.startswith("fhirlink/sandbox")]
    assert {"fhirlink/__init__.py", "fhirlink/vault.py", "fhirlink/models/store.py"} <= shipped
    # The image gets code only through COPYs of directories in the context (no `COPY . .` that
    # a later edit of .dockerignore could widen), and no COPY names the sandbox.
    sources = [
        source
        for keyword, args in dockerfile_instructions()
        if keyword == "COPY" and not args.startswith("--from=")
        for source in shlex.split(args)[:-1]
    ]
    assert sources == [
        "pyproject.toml",
        "manage.py",
        "patientportal/",
        "fhirlink/",
        "engagement/",
        "deploy/",
    ]


SANDBOX_ABSENT = r"""
import importlib
import json
import sys
from pathlib import Path


class NotInTheImage:
    def find_spec(self, name, path=None, target=None):
        if name == "fhirlink.sandbox" or name.startswith("fhirlink.sandbox."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInTheImage())

import django

django.setup()
from django.core.management import call_command

import patientportal.urls  # noqa: F401  (every view, serializer, admin)
from patientportal.celery import app

app.loader.import_default_modules()  # every app's tasks
imported = []
for path in sorted(Path("fhirlink").rglob("*.py")):
    parts = path.with_suffix("").parts
    if parts[:2] == ("fhirlink", "sandbox"):
        continue
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    importlib.import_module(name)
    imported.append(name)
call_command("check")
print(json.dumps(imported))
"""


def test_production_imports_and_checks_without_the_sandbox_package(tmp_path):
    """What the image runs, with fhirlink.sandbox unimportable as it is there: the production
    settings, every URL (views, serializers, admins), every app's tasks, every fhirlink module
    but the sandbox's, and the system checks."""
    result = subprocess.run(
        [sys.executable, "-c", SANDBOX_ABSENT],
        cwd=ROOT,
        env=production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    imported = json.loads(result.stdout.strip().splitlines()[-1])
    expected = sorted(
        ".".join(path.with_suffix("").parts[:-1])
        if path.name == "__init__.py"
        else ".".join(path.with_suffix("").parts)
        for path in (p.relative_to(ROOT) for p in sorted((ROOT / "fhirlink").rglob("*.py")))
        if path.parts[:2] != ("fhirlink", "sandbox")
    )
    assert sorted(imported) == expected
    assert {
        "fhirlink",
        "fhirlink.tasks",
        "fhirlink.api.urls",
        "fhirlink.management.commands.sync_benchmark",
    } <= set(imported)
    assert not [name for name in imported if name.startswith("fhirlink.sandbox")]


def sandbox_imports(source: str, package: str) -> list[int]:
    """Lines of `source` (a module of `package`) that import fhirlink.sandbox: import statements
    (relative ones resolved), or a constant dotted path given to an importer."""
    lines = []
    parts = package.split(".")
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", ""))
            in {"import_module", "import_string", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names = [str(node.args[0].value)]
        sandbox = [n for n in names if n == "fhirlink.sandbox" or n.startswith("fhirlink.sandbox.")]
        if sandbox and isinstance(node, ast.stmt | ast.expr):
            lines.append(node.lineno)
    return sorted(lines)


def test_no_production_code_imports_the_sandbox():
    """Imports inside functions too (the test above runs the module level only): nothing outside
    fhirlink/sandbox/ imports it, by a statement or by a dotted path given to an importer."""
    probe = (
        "from .sandbox import views\n"
        "import fhirlink.sandboxed\n"
        "def f():\n"
        "    import_string('fhirlink.sandbox.urls.x')\n"
        "    from fhirlink import sandbox\n"
        "    from . import vault\n"
    )
    assert sandbox_imports(probe, "fhirlink") == [1, 4, 5]
    assert sandbox_imports("from ..sandbox import faults\n", "fhirlink.api") == [1]
    files = [ROOT / "manage.py", *(ROOT / "deploy").glob("*.py")]
    for app in ("patientportal", "fhirlink", "engagement"):
        files += [
            path
            for path in (ROOT / app).rglob("*.py")
            if not path.is_relative_to(ROOT / "fhirlink" / "sandbox")
        ]
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in files
        for line in sandbox_imports(
            path.read_text(), ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
        )
    ]
    assert len(files) > 200
    assert offenders == []


def test_builder_installs_exactly_the_pinned_dependencies(tmp_path):
    (builder,) = [steps for name, steps in stages() if name == "builder"]
    (install,) = [args for keyword, args in builder if keyword == "RUN" and "tomllib" in args]
    extract = install.split(" && ")[0]
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    subprocess.run(extract, shell=True, cwd=tmp_path, check=True, env={"PATH": str(BIN)})
    requirements = (tmp_path / "requirements.txt").read_text().splitlines()
    with (ROOT / "pyproject.toml").open("rb") as f:
        pinned = tomllib.load(f)["project"]["dependencies"]
    assert requirements == pinned
    assert all("==" in requirement for requirement in requirements)
    assert "pip install --requirement requirements.txt" in install


def test_collectstatic_step_runs_under_the_production_settings(tmp_path):
    """The Dockerfile's collectstatic RUN, run here with the image's ENV (paths moved to tmp)."""
    runtime = dict(stages())["runtime"]
    (step,) = [args for keyword, args in runtime if keyword == "RUN" and "collectstatic" in args]
    static_root = tmp_path / "staticfiles"
    env = {
        "PATH": f"{BIN}{os.pathsep}/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "DJANGO_SETTINGS_MODULE": "patientportal.settings.production",
        "VAR_DIR": str(tmp_path / "var"),
        "STATIC_ROOT": str(static_root),
    }
    result = subprocess.run(  # the Dockerfile's own shell step
        step, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\d+ static files copied to '.*staticfiles'", result.stdout, re.M)
    assert (static_root / "admin" / "css" / "base.css").is_file()
    assert (static_root / "admin" / "css" / "base.css.gz").is_file()  # for nginx gzip_static


# --- compose ----------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def script(name: str) -> str:
    return (DEPLOY / "bin" / name).read_text()


def test_compose_services_and_start_order():
    services = compose()["services"]
    assert set(services) == {"db", "redis", "migrate", "static", "web", "worker", "beat", "nginx"}
    app_services = ("migrate", "static", "web", "worker", "beat")
    for name in app_services:
        service = services[name]
        # One image for every process, selected by the command.
        assert service["image"] == "${PATIENTPORTAL_IMAGE:-patientportal:latest}"
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert service["command"] == [f"/app/deploy/bin/{name}"]
        assert service["env_file"] == ".env"
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert service["security_opt"] == ["no-new-privileges:true"]
        assert "ports" not in service
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    for name in ("web", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
        assert services[name]["restart"] == "unless-stopped"
    assert services["nginx"]["depends_on"] == {
        "static": {"condition": "service_completed_successfully"},
        "web": {"condition": "service_healthy"},
    }
    # Only the front end is published.
    published = {name for name, service in services.items() if "ports" in service}
    assert published == {"nginx"}
    assert services["nginx"]["ports"] == ["80:80", "443:443"]


def test_compose_database_and_redis_have_healthchecks_and_volumes():
    config = compose()
    services = config["services"]
    assert services["db"]["image"].startswith("postgres:")
    assert services["db"]["volumes"] == ["pgdata:/var/lib/postgresql/data"]
    assert "pg_isready" in services["db"]["healthcheck"]["test"][1]
    assert services["redis"]["volumes"] == ["redisdata:/data"]
    assert "redis-cli ping" in services["redis"]["healthcheck"]["test"][1]
    redis_command = " ".join(services["redis"]["command"])
    assert "--maxmemory-policy noeviction" in redis_command  # a broker must not evict jobs
    assert "--appendonly yes" in redis_command
    assert "--requirepass" in redis_command
    assert set(config["volumes"]) == {"pgdata", "redisdata", "beatdata", "static"}


def test_compose_runs_exactly_one_beat_and_bounded_workers():
    services = compose()["services"]
    assert services["beat"]["deploy"] == {"replicas": 1}
    assert services["beat"]["volumes"] == ["beatdata:/app/var"]
    worker = script("worker")
    for flag in (
        "--concurrency",
        "--time-limit",
        "--soft-time-limit",
        "--max-tasks-per-child",
        "--max-memory-per-child",
        "--prefetch-multiplier 1",
    ):
        assert flag in worker
    assert "exec celery --app patientportal worker" in worker
    assert "exec celery --app patientportal beat" in script("beat")
    assert "exec gunicorn patientportal.wsgi --config /app/deploy/gunicorn.conf.py" in script("web")
    assert "python manage.py check --deploy" in script("migrate")
    assert "exec python manage.py migrate --no-input" in script("migrate")
    health = services["worker"]["healthcheck"]["test"][1]
    assert "inspect ping" in health


def test_worker_and_beat_flags_exist_in_this_celery(tmp_path):
    env = production_env(tmp_path)
    for command in ("worker", "beat"):
        flags = set(re.findall(r"(--[a-z][a-z-]+)", script(command)))
        result = subprocess.run(
            [str(BIN / "celery"), "--app", "patientportal", command, "--help"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        for flag in flags - {"--app"}:
            assert flag in result.stdout, f"celery {command} has no {flag}"


def test_compose_holds_no_secret_and_every_variable_is_documented():
    text = (DEPLOY / "compose.yaml").read_text()
    example = (DEPLOY / "env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, re.M))
    for name in re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text):
        assert name in documented, name
    services = compose()["services"]
    assert services["db"]["environment"]["POSTGRES_PASSWORD"] == (
        "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in deploy/.env}"
    )
    assert services["redis"]["environment"]["REDIS_PASSWORD"] == (
        "${REDIS_PASSWORD:?set REDIS_PASSWORD in deploy/.env}"
    )
    # The filled-in env file is never committed.
    assert (DEPLOY / ".gitignore").read_text().splitlines()[1:] == [
        ".env",
        "nginx/certs/",
        "nginx/acme/",
    ]


def test_procfile_demo_keeps_its_processes():
    names = [
        line.split(":", 1)[0]
        for line in (DEPLOY / "Procfile.demo").read_text().splitlines()
        if line.strip()
    ]
    assert {"web", "sandbox", "worker", "beat"} <= set(names)


# --- TLS front end ------------------------------------------------------------------------------


def nginx_template() -> str:
    return (DEPLOY / "nginx" / "templates" / "default.conf.template").read_text()


def nginx_directives(text: str) -> list[str]:
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_nginx_terminates_tls_with_modern_settings():
    directives = nginx_directives(nginx_template())
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in directives
    (ciphers,) = [d for d in directives if d.startswith("ssl_ciphers ")]
    for cipher in ciphers.removeprefix("ssl_ciphers ").rstrip(";").split(":"):
        # Forward secrecy and AEAD only: no CBC, RC4, 3DES, static RSA key exchange.
        assert cipher.startswith("ECDHE-"), cipher
        assert cipher.endswith(("GCM-SHA256", "GCM-SHA384", "CHACHA20-POLY1305")), cipher
    assert "ssl_session_tickets off;" in directives
    assert "ssl_reject_handshake on;" in directives  # unknown host names get no certificate
    assert "server_tokens off;" in directives
    assert "return 301 https://$server_name$request_uri;" in directives


def test_nginx_sends_hsts_and_overwrites_forwarding_headers():
    snippets = DEPLOY / "nginx" / "snippets"
    headers = nginx_directives((snippets / "response-headers.conf").read_text())
    hsts = '"max-age=31536000; includeSubDomains; preload" always;'
    assert f"add_header Strict-Transport-Security {hsts}" in headers
    assert 'add_header X-Content-Type-Options "nosniff" always;' in headers
    proxy = nginx_directives((snippets / "proxy.conf").read_text())
    assert "proxy_set_header X-Forwarded-Proto https;" in proxy
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in proxy
    assert "proxy_set_header Host $host;" in proxy
    assert "proxy_hide_header Strict-Transport-Security;" in proxy


def test_nginx_limits_match_the_application(settings):
    template = nginx_directives(nginx_template())
    assert "client_max_body_size ${DATA_UPLOAD_MAX_MEMORY_SIZE};" in template
    nginx = compose()["services"]["nginx"]
    default = nginx["environment"]["DATA_UPLOAD_MAX_MEMORY_SIZE"]
    assert default == f"${{DATA_UPLOAD_MAX_MEMORY_SIZE:-{settings.DATA_UPLOAD_MAX_MEMORY_SIZE}}}"
    proxy = nginx_directives((DEPLOY / "nginx" / "snippets" / "proxy.conf").read_text())
    gunicorn = load_gunicorn_conf({})
    assert f"proxy_read_timeout {gunicorn['timeout']}s;" in proxy
    assert f"proxy_send_timeout {gunicorn['timeout']}s;" in proxy
    assert "proxy_connect_timeout 5s;" in proxy
    # Static files straight from the volume the "static" one-shot service fills.
    assert "location ^~ /static/ {" in template
    assert "alias /srv/static/;" in template
    assert "static:/srv/static:ro" in nginx["volumes"]
    assert "static:/srv/static" in compose()["services"]["static"]["volumes"]


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed here")
def test_nginx_accepts_the_rendered_configuration(tmp_path):
    version = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=True).stderr
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", version)
    assert found, version
    major, minor, patch = map(int, found.groups())
    conf = nginx_template()
    conf = conf.replace("${SERVER_NAME}", "portal.example.org")
    conf = conf.replace("${DATA_UPLOAD_MAX_MEMORY_SIZE}", "1048576")
    assert "${" not in conf
    if (major, minor, patch) < (1, 25, 1):  # `http2 on;` is newer than this nginx
        conf = conf.replace("    http2 on;\n", "")
    # No DNS here for the compose service name; test paths instead of the container's.
    conf = conf.replace("server web:8000", "server 127.0.0.1:8000")
    for container_path in ("/etc/nginx/snippets", "/etc/nginx/certs", "/var/log/nginx"):
        conf = conf.replace(container_path, str(tmp_path / container_path.strip("/")))
    (tmp_path / "etc/nginx/snippets").mkdir(parents=True)
    (tmp_path / "etc/nginx/certs").mkdir(parents=True)
    (tmp_path / "var/log/nginx").mkdir(parents=True)
    for snippet in (DEPLOY / "nginx" / "snippets").iterdir():
        shutil.copy(snippet, tmp_path / "etc/nginx/snippets" / snippet.name)
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=portal.example.org",
            "-keyout", str(tmp_path / "etc/nginx/certs/privkey.pem"),
            "-out", str(tmp_path / "etc/nginx/certs/fullchain.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (tmp_path / "site.conf").write_text(conf)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        "events {}\n"
        f"http {{ include /etc/nginx/mime.types; include {tmp_path}/site.conf; }}\n"
    )
    result = subprocess.run(
        ["nginx", "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


# --- gunicorn -------------------------------------------------------------------------------------


def load_gunicorn_conf(environ: dict[str, str]) -> dict:
    code = (
        "import json, runpy; c = runpy.run_path('deploy/gunicorn.conf.py'); "
        "print(json.dumps({k: v for k, v in c.items() if not k.startswith('_') "
        "and isinstance(v, (str, int, float, bool, dict, type(None)))}))"
    )
    env = {"PATH": str(BIN), **environ}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


def test_gunicorn_settings():
    demo = load_gunicorn_conf({})
    assert demo["bind"] == "0.0.0.0:8000"
    assert demo["worker_class"] == "gthread"
    assert demo["timeout"] == 60
    assert demo["graceful_timeout"] == 30
    assert demo["control_socket_disable"] is True
    assert demo["preload_app"] is False
    assert "logconfig_dict" not in demo  # text logs in the demo
    assert "%(q)s" not in demo["access_log_format"]  # never the query string
    production = load_gunicorn_conf(
        {"DJANGO_SETTINGS_MODULE": "patientportal.settings.production", "GUNICORN_WORKERS": "3"}
    )
    assert production["workers"] == 3
    assert production["preload_app"] is True
    formatter = production["logconfig_dict"]["formatters"]["json"]["()"]
    assert formatter == "pythonjsonlogger.json.JsonFormatter"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gunicorn_serves_healthz_under_production_settings_and_the_health_check_passes(tmp_path):
    port = free_port()
    env = production_env(tmp_path, GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS="1")
    log = (tmp_path / "gunicorn.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "gunicorn"), "patientportal.wsgi", "--config", "deploy/gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        healthcheck = [sys.executable, str(DEPLOY / "healthcheck.py")]
        while True:
            check = subprocess.run(healthcheck, env=env, capture_output=True, text=True)
            if check.returncode == 0 or time.monotonic() > deadline or proc.poll() is not None:
                break
            time.sleep(0.3)
        assert check.returncode == 0, (tmp_path / "gunicorn.log").read_text()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/healthz", headers={"Host": "portal.example.org"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
            assert json.loads(response.read()) == {"status": "ok"}
        # A Host the settings do not allow fails the check (it is not a blind TCP probe).
        bad = subprocess.run(
            healthcheck, env={**env, "PUBLIC_BASE_URL": "https://evil.example"}, check=False
        )
        assert bad.returncode == 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    output = (tmp_path / "gunicorn.log").read_text()
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    access = [line["message"] for line in lines if line["logger"] == "gunicorn.access"]
    assert any('"GET /healthz" 200' in message for message in access), output
    for secret in SECRETS:
        assert secret not in output


def test_health_check_fails_when_nothing_listens(tmp_path):
    env = production_env(tmp_path, GUNICORN_BIND=f"127.0.0.1:{free_port()}")
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "healthcheck.py")], env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "unhealthy: ConnectionRefusedError"
    assert_no_secret(result)


# --- the image's package set ----------------------------------------------------------------------

IMPORT_EVERYTHING = r"""
import sys

blocked = set(sys.argv[1].split(","))


class DevOnly:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (only in the dev extra)")
        return None


sys.meta_path.insert(0, DevOnly())

import django

django.setup()
import kombu.transport.redis  # noqa: F401  (the production broker's transport)
from django.core.management import call_command

import patientportal.urls  # noqa: F401  (every view, serializer, admin)
from patientportal.celery import app

app.loader.import_default_modules()  # every app's tasks
call_command("check")
print("imports ok")
"""


def runtime_distributions() -> set[str]:
    """The distributions `pip install <pyproject dependencies>` installs (extras followed)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    with (ROOT / "pyproject.toml").open("rb") as f:
        pending = [Requirement(r) for r in tomllib.load(f)["project"]["dependencies"]]
    seen: dict[str, set[str]] = {}
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        if name in seen and extras <= seen[name]:
            continue
        seen.setdefault(name, set()).update(extras)
        for raw in metadata.distribution(name).requires or []:
            child = Requirement(raw)
            if child.marker is None or any(
                child.marker.evaluate({"extra": extra}) for extra in seen[name] | {""}
            ):
                pending.append(child)
    return set(seen)


def top_level_modules(distribution) -> set[str]:
    names = set()
    for file in distribution.files or []:
        first = file.parts[0]
        if first.endswith((".dist-info", ".egg-info", ".pth")) or first in {"..", "__pycache__"}:
            continue
        names.add(first.removesuffix(".py"))
    return names


def test_production_imports_nothing_that_only_the_dev_extra_installs(tmp_path):
    """The image installs the runtime dependencies only; the dev virtualenv has more (pytest,
    packaging, ...), which can hide a missing runtime dependency. Block those and import
    everything production runs."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    runtime = runtime_distributions()
    runtime_modules: set[str] = set()
    dev_modules: set[str] = set()
    for distribution in metadata.distributions():
        name = canonicalize_name(distribution.metadata["Name"])
        if name in {"patientportal", "pip", "setuptools", "wheel"}:
            continue
        (runtime_modules if name in runtime else dev_modules).update(
            top_level_modules(distribution)
        )
    blocked = dev_modules - runtime_modules
    assert {"pytest", "factory", "responses", "mypy"} <= blocked
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING, ",".join(sorted(blocked))],
        cwd=ROOT,
        env=production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("imports ok")
