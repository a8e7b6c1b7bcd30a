# One image for web and workers. TORCH_INDEX picks the torch build: the CPU wheels by default;
# build the GPU worker's image with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    PREFLOOP_DATA_DIR=/data PREFLOOP_MEDIA_DIR=/data/media
WORKDIR /app
RUN pip install --index-url "$TORCH_INDEX" "torch>=2.4"
COPY pyproject.toml README.md ./
COPY config config
COPY annotate annotate
COPY training training
COPY rewards rewards
COPY templates templates
COPY static static
COPY manage.py ./
RUN pip install . && mkdir -p /data/media
EXPOSE 8000
CMD ["gunicorn", "config.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--threads", "4"]
