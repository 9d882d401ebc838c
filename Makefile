# Two commands from a fresh clone: `make run` (the whole system) and `make test` (the suite).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run test install migrate demo lint format check bench chaos clean

$(VENV)/.installed: pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e ".[dev]"
	touch $@

install: $(VENV)/.installed

migrate: install
	$(PY) manage.py migrate --noinput

demo: migrate
	$(PY) manage.py create_demo_data

# A stack already running here is refused before its database is migrated or its demo data loaded.
run: install
	$(PY) -m config.devstack --check
	$(MAKE) --no-print-directory demo
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) -m config.devstack

# The suite on TEST_WORKERS processes (pytest-xdist; tests that share one machine-wide resource are
# grouped onto one worker), then the whole-system runs (`solo`: the chaos and cluster runs), each
# with the machine to itself. `pytest -n 0` or a path runs serially as usual. Three on two cores:
# many tests wait on real processes (a browser, a partner's delay, a server starting), and a third
# worker fills those waits (the PostgreSQL suite took 492 s against 692 s on two).
TEST_WORKERS ?= 3
test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not solo"
	$(PY) -m pytest -m solo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

check: install
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) manage.py spectacular --file /dev/null --validate --fail-on-warn
	$(PRODUCTION_CHECK_ENV) SECRET_KEY=$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))') \
		$(PY) manage.py check --deploy --fail-level WARNING

# `make check`'s production settings: stand-ins for what production requires (it refuses the
# development defaults). The check reads them only; it connects to none of these servers.
PRODUCTION_CHECK_ENV := DJANGO_SETTINGS_MODULE=config.settings.production \
	DATABASE_URL=postgres://bookings@db.example.com:5432/bookings REDIS_URL=redis://redis.example.com:6379/0 \
	STRIPE_API_KEY=sk_live_stand_in STRIPE_WEBHOOK_SECRET=whsec_stand_in STRIPE_API_BASE=https://api.stripe.com \
	SITE_URL=https://bookings.example.com ALLOWED_HOSTS=bookings.example.com TRUSTED_PROXY_COUNT=1 \
	EMAIL_URL=smtp+tls://bookings:stand-in@mail.example.com:587 DEFAULT_FROM_EMAIL=bookings@example.com

bench: install
	$(PY) -m bench

chaos: migrate
	$(PY) manage.py chaos

clean:
	rm -rf var/redis var/sandbox staticfiles
