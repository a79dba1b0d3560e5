# Eddy in a container: docker build -t eddy . && docker run -p 8080:8080 -v eddy-data:/data eddy
# The image runs the installed wheel (not the source tree), exactly as `pip install eddy` would.

# --- build: the wheel --------------------------------------------------------------------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY eddy/__init__.py eddy/__main__.py eddy/py.typed ./eddy/
COPY app ./app
COPY broker ./broker
COPY client ./client
COPY models ./models
COPY routers ./routers
COPY storage ./storage
COPY static ./static
COPY openapi ./openapi
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- run: the wheel installed, no sources --------------------------------------------------------
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 eddy && mkdir /data && chown eddy /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels

USER eddy
WORKDIR /home/eddy
ENV EDDY_HOST=0.0.0.0 EDDY_PORT=8080 EDDY_DATA_DIR=/data
EXPOSE 8080
VOLUME ["/data"]
# Shell form so that ${EDDY_PORT} is the port the server really uses (`docker run -e EDDY_PORT=9000`).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
  CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:${EDDY_PORT:-8080}/readyz', timeout=2).status != 200)"
# exec form: SIGTERM reaches eddy, which drains and exits 0
CMD ["eddy", "serve"]
