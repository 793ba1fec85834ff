#!/usr/bin/env bash
# Open WebUI as the chat page for clawlan, on loopback, offline.
#
#   deploy/openwebui/run.sh                              # talks to clawlan serve at http://127.0.0.1:8080/v1
#   CLAWLAN_URL=http://127.0.0.1:8081/v1 deploy/openwebui/run.sh   # or to a front end's local endpoint
#
# Open WebUI is large (hundreds of MB of Python packages), so it lives in its own virtual
# environment, not clawlan's:  python3.11 -m venv ~/openwebui && ~/openwebui/bin/pip install open-webui
# Then open http://127.0.0.1:3000/ . Nothing here reaches the internet: every setting below that
# would (model downloads, update checks, telemetry) is off.
set -euo pipefail

OPENWEBUI_VENV=${OPENWEBUI_VENV:-$HOME/openwebui}
CLAWLAN_URL=${CLAWLAN_URL:-http://127.0.0.1:8080/v1}

# Where to send chats. The key is clawlan's --api-key if the server has one; any text otherwise.
export OPENAI_API_BASE_URL="$CLAWLAN_URL"
export OPENAI_API_KEY="${CLAWLAN_API_KEY:-none}"
export ENABLE_OLLAMA_API=False             # no Ollama on this box: do not poll for one

# Offline: no Hugging Face downloads, no update checks, no telemetry.
export OFFLINE_MODE=True
export HF_HUB_OFFLINE=1
export ENABLE_VERSION_UPDATE_CHECK=False
export ANONYMIZED_TELEMETRY=False
export DO_NOT_TRACK=True
export SCARF_NO_ANALYTICS=True

# Documents: Open WebUI embeds them with a sentence-transformers model it would download at first
# start (and logs a traceback when it cannot). clawlan has no embeddings endpoint, so skip the
# embedding model and give the model whole documents ("full context" mode) instead.
export RAG_EMBEDDING_MODEL=""
export BYPASS_EMBEDDING_AND_RETRIEVAL=True

# Background "task" requests (a title, tags, follow-up suggestions, autocomplete) are extra chat
# requests with no max_tokens. A small model that does not stop keeps a slot busy for minutes;
# on a CPU server keep them off, or give them a small task model.
export ENABLE_TITLE_GENERATION=False
export ENABLE_TAGS_GENERATION=False
export ENABLE_FOLLOW_UP_GENERATION=False
export ENABLE_AUTOCOMPLETE_GENERATION=False

# One person at one box: no login page. Remove for a shared install (then the first account is admin).
export WEBUI_AUTH=${WEBUI_AUTH:-False}
export DATA_DIR=${DATA_DIR:-$HOME/.local/share/open-webui}
# Open WebUI stores most of these in its database at first start and then ignores the environment;
# this makes the lines above win at every start.
export ENABLE_PERSISTENT_CONFIG=False

# Fail early, in one line, if clawlan is not there (Open WebUI would start and show no models).
if ! curl -fsS -m 3 -H "authorization: Bearer $OPENAI_API_KEY" "$CLAWLAN_URL/models" >/dev/null; then
  echo "clawlan does not answer at $CLAWLAN_URL/models; start it first (clawlan serve, or make run)" >&2
  exit 1
fi
exec "$OPENWEBUI_VENV/bin/open-webui" serve --host 127.0.0.1 --port "${PORT:-3000}"
