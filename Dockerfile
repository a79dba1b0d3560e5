# Eddy in a container: docker build -t eddy . && docker run -p 8080:8080 -v eddy-data:/data eddy
FROM python:3.11-slim

RUN useradd --create-home --uid 10001 eddy
WORKDIR /opt/eddy
COPY pyproject.toml README.md ./
COPY app ./app
COPY broker ./broker
COPY models ./models
COPY routers ./routers
COPY storage ./storage
COPY static ./static
RUN pip install --no-cache-dir -e . && mkdir /data && chown eddy /data

USER eddy
ENV EDDY_HOST=0.0.0.0 EDDY_PORT=8080 EDDY_DATA_DIR=/data
EXPOSE 8080
VOLUME ["/data"]
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz').status != 200)"
# exec form: SIGTERM reaches eddy, which drains and exits 0
CMD ["eddy", "serve"]
