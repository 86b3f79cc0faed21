# One image for every vocstream service; the command picks the service.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY voc ./voc
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 voc
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER voc
WORKDIR /home/voc
ENV PYTHONUNBUFFERED=1
CMD ["python", "-m", "services.api"]
