# The simulated plant, PLC and MES receiver for deploy/compose.yaml's demo plant; never for
# production. Build from the repository root:
#   docker build -f deploy/simulators.Dockerfile -t bridge-simulators .
#   docker run --rm -p 4840:4840 bridge-simulators simulate plant --host 0.0.0.0
FROM python:3.11-slim

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/bridge --create-home bridge
WORKDIR /opt/bridge
COPY deploy/requirements.lock ./requirements.lock
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md LICENSE ./
# bridge/connectors and bridge/simulators are links to the two folders below (COPY keeps links).
COPY bridge ./bridge
COPY connectors ./connectors
COPY simulators ./simulators
# simulators/demo_data links into mappings/ (the demo mapping and model).
COPY mappings ./mappings
RUN pip install --no-cache-dir --no-deps . && rm -rf build

USER 10001
WORKDIR /var/lib/bridge
ENTRYPOINT ["bridge"]
CMD ["simulate", "--help"]
