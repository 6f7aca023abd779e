-- Options of the gpo plugin and the `gpo` settings object sent to the server.
-- Pure functions (no LSP calls), so the headless test can check them alone.
local M = {}

M.defaults = {
  -- The server command; nil: $VIRTUAL_ENV/bin/gpo, else gpo on PATH.
  cmd = nil,
  -- A file's root is the nearest folder holding one of these, else its folder.
  root_markers = { '.git', 'pyproject.toml', '.hg' },
  settings = {
    autoOptimizeOnSave = false,
    models = { task = nil, optimizer = nil },
    daemon = { address = nil },
    budget = {}, -- { initial = 40, final = 10, decay = 'cosine' }
  },
  -- Example files whose saves are reported to the server (it asks for no file watching).
  example_patterns = { '*.jsonl', '*.csv', '*.yaml', '*.yml' },
  on_attach = nil, -- function(client, bufnr)
}

local function text_or_null(value)
  if type(value) == 'string' and value:match('%S') then
    return vim.trim(value)
  end
  return vim.NIL
end

local DECAYS = { cosine = true, linear = true, fixed = true }

local function words(value)
  if type(value) == 'number' and value >= 0 and math.floor(value) == value then
    return value
  end
  return nil
end

-- The settings object: the same shape the VS Code extension sends.
-- Unset strings are JSON null; unset budget fields are left out.
function M.settings(opts)
  local s = opts.settings or {}
  local models = s.models or {}
  local daemon = s.daemon or {}
  local budget_in = s.budget or {}
  local budget = vim.empty_dict()
  budget.initial = words(budget_in.initial)
  budget.final = words(budget_in.final)
  if type(budget_in.decay) == 'string' and DECAYS[budget_in.decay] then
    budget.decay = budget_in.decay
  end
  return {
    autoOptimizeOnSave = s.autoOptimizeOnSave == true,
    models = { task = text_or_null(models.task), optimizer = text_or_null(models.optimizer) },
    daemon = { address = text_or_null(daemon.address) },
    budget = budget,
  }
end

-- Answer for workspace/configuration: one value per item, section "gpo" or a
-- dotted part of it; vim.NIL for sections that are not ours. (Neovim 0.7's
-- default handler drops items without a section, misaligning the answer.)
function M.configuration_result(items, settings)
  local result = {}
  for index, item in ipairs(items or {}) do
    local section = item.section or ''
    local value = vim.NIL
    if section == 'gpo' or vim.startswith(section, 'gpo.') then
      value = settings
      local parts = vim.split(section, '.', { plain = true })
      for i = 2, #parts do
        if type(value) ~= 'table' or value[parts[i]] == nil then
          value = vim.NIL
          break
        end
        value = value[parts[i]]
      end
    end
    result[index] = value
  end
  return result
end

function M.merge(user)
  return vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), user or {})
end

-- The server command from the options, the active virtualenv, then PATH.
-- `executable(path)` and `getenv(name)` come in so tests can fake them.
function M.server_cmd(opts, executable, getenv)
  if opts.cmd then
    return opts.cmd
  end
  local venv = getenv('VIRTUAL_ENV')
  if venv and venv ~= '' and executable(venv .. '/bin/gpo') then
    return { venv .. '/bin/gpo', 'lsp' }
  end
  if executable('gpo') then
    return { 'gpo', 'lsp' }
  end
  return nil
end

-- The nearest folder above `path` holding one of `markers`, else the file's folder.
-- `exists(path)` comes in so tests can fake the file system.
function M.find_root(path, markers, exists)
  local dir = vim.fn.fnamemodify(path, ':p:h')
  local start = dir
  while true do
    for _, marker in ipairs(markers) do
      if exists(dir .. '/' .. marker) then
        return dir
      end
    end
    local parent = vim.fn.fnamemodify(dir, ':h')
    if parent == dir then
      return start
    end
    dir = parent
  end
end

return M
