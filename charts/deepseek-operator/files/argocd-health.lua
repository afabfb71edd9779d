-- Argo CD health check for serving.deepseek.ai/DeepSeekDeployment (deepseek-operator).
-- It reads only the status fields the operator writes for this (docs/gitops.md, "What a health
-- check reads"): metadata.generation, status.observedGeneration, status.phase, the conditions
-- Placed, Progressing (reasons InvalidSpec, Halted, AnalysisFailing, Canary), Ready and
-- RolledBack, status.revisions.stable and status.readyReplicas.
-- It runs in Argo CD's sandbox for argocd-cm overrides: no string library (only `..` and
-- tostring), JSON null is nil, arrays are 1-based, and a missing field is never an error.
local hs = {}
local meta = obj.metadata or {}
local status = obj.status

local function result(code, message)
  hs.status = code
  hs.message = message
  return hs
end

if status == nil or status.observedGeneration == nil then
  return result("Progressing", "waiting for the operator: no status yet")
end
if meta.generation ~= nil and status.observedGeneration < meta.generation then
  return result("Progressing", "waiting for the operator to observe generation " .. tostring(meta.generation)
    .. " (status is of generation " .. tostring(status.observedGeneration) .. ")")
end

local conds = {}
if status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    if c ~= nil and c.type ~= nil then
      conds[c.type] = c
    end
  end
end

local function text(c, field)
  if c == nil or c[field] == nil then
    return ""
  end
  return tostring(c[field])
end

local placed, progressing, ready, rolled = conds["Placed"], conds["Progressing"], conds["Ready"], conds["RolledBack"]
local phase = status.phase or ""
local stable = ""
if status.revisions ~= nil and status.revisions.stable ~= nil then
  stable = tostring(status.revisions.stable)
end
local keeps = ""
if stable ~= "" and status.readyReplicas ~= nil and status.readyReplicas > 0 then
  keeps = "; revision " .. stable .. " keeps serving"
end

if text(progressing, "reason") == "InvalidSpec" then
  return result("Degraded", "the spec is refused: " .. text(progressing, "message") .. keeps)
end
if text(placed, "status") == "False" then
  return result("Degraded", "the spec cannot be placed (" .. text(placed, "reason") .. "): "
    .. text(placed, "message") .. keeps)
end
if text(progressing, "status") == "False" and text(progressing, "reason") == "Halted" then
  return result("Suspended", text(progressing, "message"))
end
if text(progressing, "status") == "False" and text(progressing, "reason") == "AnalysisFailing" then
  return result("Degraded", text(progressing, "message"))
end
if text(rolled, "status") == "True" then
  local serves = ""
  if stable ~= "" then
    serves = "; revision " .. stable .. " serves"
  end
  return result("Degraded", text(rolled, "message") .. serves
    .. ". Git names a revision that was rolled back: change the spec or set the retry annotation"
    .. " serving.deepseek.ai/retry to a new value")
end
if phase == "Failed" then
  return result("Degraded", "failed (" .. text(ready, "reason") .. "): " .. text(ready, "message"))
end
if phase == "Degraded" then
  local why = text(ready, "reason") .. ": " .. text(ready, "message")
  if text(progressing, "status") == "False" and text(progressing, "reason") ~= "RolledOut"
    and text(progressing, "message") ~= text(ready, "message") then
    why = why .. "; " .. text(progressing, "reason") .. ": " .. text(progressing, "message")
  end
  return result("Degraded", why)
end
if phase == "Ready" then
  return result("Healthy", text(ready, "message"))
end
if phase == "Canary" then
  return result("Progressing", text(progressing, "message"))
end
local detail = text(progressing, "message")
if text(ready, "status") ~= "True" and text(ready, "message") ~= "" then
  detail = text(ready, "message")
end
if phase == "" then
  phase = "no phase yet"
end
return result("Progressing", phase .. ": " .. detail)
