-- gpo for Neovim 0.7+: one `gpo lsp` client per project root, attached to
-- every dotprompt buffer under it, with the `gpo` settings answered from
-- setup() and a few commands. Uses only the 0.7 API (start_client,
-- buf_attach_client), so it runs on Debian's 0.7.2 as on newer releases.
local config = require('gpo.config')

local M = {}

M.options = config.merge(nil)
local clients = {} -- root folder -> client id

local function notify(message, level)
  vim.notify('gpo: ' .. message, level or vim.log.levels.INFO)
end

function M.setup(user)
  M.options = config.merge(user)
end

local function executable(path)
  return vim.fn.executable(path) == 1
end

local function exists(path)
  return vim.loop.fs_stat(path) ~= nil
end

local function live_client(root)
  local id = clients[root]
  local client = id and vim.lsp.get_client_by_id(id)
  if client and not client.is_stopped() then
    return client
  end
  clients[root] = nil
  return nil
end

local function start(root)
  local cmd = config.server_cmd(M.options, executable, os.getenv)
  if not cmd then
    notify('cannot find `gpo`: pip install gpo-lsp, or set cmd in setup()', vim.log.levels.ERROR)
    return nil
  end
  local settings = config.settings(M.options)
  local id = vim.lsp.start_client({
    name = 'gpo',
    cmd = cmd,
    root_dir = root,
    workspace_folders = { { uri = vim.uri_from_fname(root), name = root } },
    init_options = settings,
    settings = { gpo = settings },
    handlers = {
      ['workspace/configuration'] = function(_, params)
        return config.configuration_result(params.items, config.settings(M.options))
      end,
    },
    on_attach = M.options.on_attach,
    on_exit = function()
      -- Scheduled: on_exit runs in a luv callback.
      vim.schedule(function()
        if clients[root] and not live_client(root) then
          clients[root] = nil
        end
      end)
    end,
  })
  if id then
    clients[root] = id
  end
  return id
end

-- Attach the root's client to a dotprompt buffer, starting it if needed.
function M.attach(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  local name = vim.api.nvim_buf_get_name(bufnr)
  if name == '' or vim.bo[bufnr].buftype ~= '' then
    return nil
  end
  local root = config.find_root(name, M.options.root_markers, exists)
  local client = live_client(root)
  local id = client and client.id or start(root)
  if id then
    vim.lsp.buf_attach_client(bufnr, id)
  end
  return id
end

function M.client_for(bufnr)
  local name = vim.api.nvim_buf_get_name(bufnr)
  return live_client(config.find_root(name, M.options.root_markers, exists))
end

-- Stop every client and attach the open dotprompt buffers again.
function M.restart()
  for root, id in pairs(clients) do
    local client = vim.lsp.get_client_by_id(id)
    if client then
      client.stop()
    end
    clients[root] = nil
  end
  -- Give the old processes a moment to exit before starting new ones.
  vim.defer_fn(function()
    for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
      if vim.api.nvim_buf_is_loaded(bufnr) and vim.bo[bufnr].filetype == 'dotprompt' then
        M.attach(bufnr)
      end
    end
  end, 200)
end

-- The buffer (0 or nil: the current one) and its gpo client; warns when it has none.
local function buffer_client(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  local client = M.client_for(bufnr)
  if not client then
    notify('no gpo language server for this buffer', vim.log.levels.WARN)
  end
  return bufnr, client
end

-- Run a server command (gpo.optimize, gpo.stop, gpo.rescore) on a buffer.
function M.command(name, bufnr)
  local client
  bufnr, client = buffer_client(bufnr)
  if not client then
    return
  end
  local params = { command = name, arguments = { vim.uri_from_bufnr(bufnr) } }
  client.request('workspace/executeCommand', params, function(err)
    if err then
      notify(name .. ' failed: ' .. (err.message or vim.inspect(err)), vim.log.levels.ERROR)
    end
  end, bufnr)
end

-- Apply the GPO suggestion: ask for code actions, resolve the apply action, apply its edit.
function M.apply(bufnr, done)
  local client
  bufnr, client = buffer_client(bufnr)
  if not client then
    return
  end
  local last = math.max(vim.api.nvim_buf_line_count(bufnr) - 1, 0)
  local params = {
    textDocument = { uri = vim.uri_from_bufnr(bufnr) },
    range = { start = { line = 0, character = 0 }, ['end'] = { line = last, character = 0 } },
    context = { diagnostics = {} },
  }
  local function finish(ok, message)
    if message then
      notify(message, ok and vim.log.levels.INFO or vim.log.levels.WARN)
    end
    if done then
      done(ok)
    end
  end
  client.request('textDocument/codeAction', params, function(err, actions)
    if err then
      return finish(false, 'code actions failed: ' .. (err.message or ''))
    end
    local chosen
    for _, action in ipairs(actions or {}) do
      if type(action.data) == 'table' and action.data.action == 'gpo.apply' then
        chosen = action
      end
    end
    if not chosen then
      return finish(false, 'no suggestion for this prompt yet')
    end
    client.request('codeAction/resolve', chosen, function(resolve_err, resolved)
      if resolve_err or not resolved or not resolved.edit then
        local reason = resolve_err and resolve_err.message
          or (resolved and resolved.disabled and resolved.disabled.reason)
          or 'the server sent no edit'
        return finish(false, 'cannot apply: ' .. reason)
      end
      vim.lsp.util.apply_workspace_edit(resolved.edit, client.offset_encoding or 'utf-16')
      finish(true, resolved.title)
    end, bufnr)
  end, bufnr)
end

-- Tell the servers that an example file was saved (Neovim 0.7 has no file watcher).
function M.example_saved(path)
  local uri = vim.uri_from_fname(path)
  for root, _ in pairs(clients) do
    local client = live_client(root)
    if client and vim.startswith(path, root .. '/') then
      client.notify('workspace/didChangeWatchedFiles', { changes = { { uri = uri, type = 2 } } })
    end
  end
end

function M.roots()
  local out = {}
  for root, id in pairs(clients) do
    out[root] = id
  end
  return out
end

return M
