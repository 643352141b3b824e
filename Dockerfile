# Module Registration Explorer. CPU torch by default; for a CUDA build:
#   docker build --build-arg TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" .
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    MRE_HOST=0.0.0.0 MRE_PORT=8000

RUN pip install ${TORCH_SPEC} numpy
# Built from a copy that is removed afterwards: the wheel carries templates, static files and
# catalogs, so the server runs from an empty directory like any installed package.
COPY pyproject.toml setup.py MANIFEST.in README.md /src/
COPY app /src/app
COPY templates /src/templates
COPY static /src/static
COPY lessons /src/lessons
RUN pip install /src && rm -rf /src && useradd --create-home --uid 10001 explorer
USER explorer
WORKDIR /home/explorer

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/health', timeout=2)"
CMD ["python", "-m", "app"]
