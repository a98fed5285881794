# goproxy-router: multi-stage build, slim runtime, non-root, rules mounted at /etc/goproxy-router.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY router ./router
RUN pip install --no-cache-dir --upgrade pip \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin gateway
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY rules /etc/goproxy-router
ENV ROUTER_WORKERS=1 \
    ROUTER_LISTEN=0.0.0.0:8080 \
    PYTHONUNBUFFERED=1
USER gateway
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD python -c "import os,sys,urllib.request as u; p=os.environ.get('ROUTER_LISTEN','0.0.0.0:8080').rpartition(':')[2]; sys.exit(0 if u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["sh", "-c", "exec goproxy-router serve --rules /etc/goproxy-router --listen \"$ROUTER_LISTEN\" --workers \"$ROUTER_WORKERS\" \"$@\"", "--"]
