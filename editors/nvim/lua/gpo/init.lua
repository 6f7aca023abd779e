-- gpo for Neovim 0.7+: one `gpo lsp` client per project root, attached to
-- every dotprompt buffer under it, with the `gpo` settings answered from
-- setup() and a few commands. The client starts through the newest API the
-- running Neovim has (M.api):
--   'enable'        0.11+     vim.lsp.config + vim.lsp.enable: Neovim starts and attaches it
--   'start'         0.8-0.10  vim.lsp.start, from the plugin's FileType autocommand
--   'start_client'  0.7       vim.lsp.start_client + vim.lsp.buf_attach_client
-- so that current Neovim prints no deprecation warning and Debian's 0.7.2 still works.
local config = require('gpo.config')

local M = {}

local NAME = 'gpo'
local MISSING = 'cannot find `gpo`: install it with `pip install /path/to/gpo` (a checkout of '
  .. 'the gpo repository) in the environment Neovim runs in, or set cmd in setup()'

local function has(version)
  return vim.fn.has('nvim-' .. version) == 1
end

M.api = (has('0.11') and 'enable') or (has('0.8') and 'start') or 'start_client'

-- From 0.11 client methods take the client (`client:request(...)`); the older
-- `client.request(...)` form is deprecated there and the only one before.
local METHOD_SELF = has('0.11')
local function call(client, method, ...)
  if METHOD_SELF then
    return client[method](client, ...)
  end
  return client[method](...)
end

M.options = config.merge(nil)
local clients = {} -- root folder -> client id, for the clients this plugin starts (0.7-0.10)
local retired = {} -- client id -> true, stopped by :GpoRestart and never reused

local function notify(message, level)
  vim.notify('gpo: ' .. message, level or vim.log.levels.INFO)
end

local function executable(path)
  return vim.fn.executable(path) == 1
end

local fs_stat = (vim.uv or vim.loop).fs_stat
local function exists(path)
  return fs_stat(path) ~= nil
end

local function server_cmd()
  return config.server_cmd(M.options, executable, os.getenv)
end

local function root_of(path)
  return config.find_root(path, M.options.root_markers, exists)
end

local function resolve_buf(bufnr)
  return (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
end

local function is_live(client)
  return client ~= nil and not retired[client.id] and not call(client, 'is_stopped')
end

local function root_dir_of(client)
  return client.root_dir or (client.config and client.config.root_dir)
end

-- The running gpo clients by root folder.
local function running()
  local out = {}
  if M.api == 'enable' then
    for _, client in ipairs(vim.lsp.get_clients({ name = NAME })) do
      local root = root_dir_of(client)
      if root and is_live(client) then
        out[root] = client
      end
    end
    return out
  end
  for root, id in pairs(clients) do
    local client = vim.lsp.get_client_by_id(id)
    if is_live(client) then
      out[root] = client
    else
      clients[root] = nil
    end
  end
  return out
end

-- 0.8+: an existing client serves a buffer when it has the buffer's root.
local function reuse(client, conf)
  return client.name == NAME and is_live(client) and root_dir_of(client) == conf.root_dir
end

-- What every start needs, whatever the API. The settings are read from the
-- options when the client initializes, so a setup() that runs after the
-- config was made (a lazy-loaded plugin) still counts.
local function client_config()
  local settings = config.settings(M.options)
  return {
    name = NAME,
    init_options = settings,
    settings = { gpo = settings },
    before_init = function(params, client)
      local now = config.settings(M.options)
      params.initializationOptions = now
      client.init_options = now
      client.settings = client.settings or {}
      client.settings.gpo = now -- the client's own settings table: sent on init
    end,
    handlers = {
      ['workspace/configuration'] = function(_, params)
        return config.configuration_result(params.items, config.settings(M.options))
      end,
    },
    on_attach = function(client, bufnr)
      if M.options.on_attach then
        M.options.on_attach(client, bufnr)
      end
    end,
  }
end

-- 0.11+: the `gpo` config that vim.lsp.enable starts for dotprompt buffers.
-- The command and the root are worked out per buffer, when Neovim starts a client.
local function lsp_config()
  local cfg = client_config()
  cfg.filetypes = { 'dotprompt' }
  cfg.reuse_client = reuse
  cfg.root_dir = function(bufnr, on_dir)
    local name = vim.api.nvim_buf_get_name(bufnr)
    if name == '' then
      return
    end
    if not server_cmd() then
      return notify(MISSING, vim.log.levels.ERROR)
    end
    on_dir(root_of(name))
  end
  cfg.cmd = function(dispatchers, client)
    local cmd = server_cmd() or error('gpo: ' .. MISSING, 0)
    client = client or {}
    return vim.lsp.rpc.start(cmd, dispatchers, {
      cwd = client.cmd_cwd,
      env = client.cmd_env,
      detached = client.detached,
    })
  end
  return cfg
end

-- 0.11+: (re)define the `gpo` config from the options and enable it.
-- A later setup() replaces the config; running clients keep theirs.
function M.enable()
  if M.api ~= 'enable' then
    return
  end
  vim.lsp.config[NAME] = lsp_config()
  vim.lsp.enable(NAME)
end

function M.setup(user)
  M.options = config.merge(user)
  if vim.g.loaded_gpo then -- else plugin/gpo.lua enables it when it loads
    M.enable()
  end
end

-- 0.7-0.10: start a client for `root` and attach `bufnr` to it.
local function start(root, bufnr)
  local cmd = server_cmd()
  if not cmd then
    notify(MISSING, vim.log.levels.ERROR)
    return nil
  end
  local cfg = client_config()
  cfg.cmd = cmd
  cfg.root_dir = root
  cfg.workspace_folders = { { uri = vim.uri_from_fname(root), name = root } }
  local id
  if M.api == 'start' then
    -- 0.8 attaches the current buffer, later releases take opts.bufnr.
    vim.api.nvim_buf_call(bufnr, function()
      id = vim.lsp.start(cfg, { bufnr = bufnr, reuse_client = reuse })
    end)
  else
    id = vim.lsp.start_client(cfg)
    if id then
      vim.lsp.buf_attach_client(bufnr, id)
    end
  end
  if id then
    clients[root] = id
  end
  return id
end

-- Attach the root's client to a dotprompt buffer, starting it if needed.
-- The FileType autocommand calls it before 0.11; from 0.11 vim.lsp.enable
-- does this itself, and :GpoRestart calls it.
function M.attach(bufnr)
  bufnr = resolve_buf(bufnr)
  local name = vim.api.nvim_buf_get_name(bufnr)
  if name == '' or vim.bo[bufnr].buftype ~= '' then
    return nil
  end
  local root = root_of(name)
  if M.api == 'enable' then
    if not server_cmd() then
      notify(MISSING, vim.log.levels.ERROR)
      return nil
    end
    local cfg = vim.deepcopy(vim.lsp.config[NAME])
    cfg.root_dir = root
    return vim.lsp.start(cfg, { bufnr = bufnr, reuse_client = reuse })
  end
  local client = running()[root]
  if not client then
    return start(root, bufnr)
  end
  vim.lsp.buf_attach_client(bufnr, client.id)
  return client.id
end

function M.client_for(bufnr)
  return running()[root_of(vim.api.nvim_buf_get_name(bufnr))]
end

-- Stop every client and attach the open dotprompt buffers again.
function M.restart()
  for _, client in pairs(running()) do
    retired[client.id] = true
    call(client, 'stop')
  end
  clients = {}
  -- Give the old processes a moment to exit before starting new ones.
  vim.defer_fn(function()
    for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
      if vim.api.nvim_buf_is_loaded(bufnr) and vim.bo[bufnr].filetype == 'dotprompt' then
        M.attach(bufnr)
      end
    end
  end, 200)
end

-- fn(bufnr, client) with the buffer (0 or nil: the current one) and its gpo client;
-- a warning instead when it has none.
local function with_client(bufnr, fn)
  bufnr = resolve_buf(bufnr)
  local client = M.client_for(bufnr)
  if not client then
    notify('no gpo language server for this buffer', vim.log.levels.WARN)
    return
  end
  fn(bufnr, client)
end

-- Run a server command (gpo.optimize, gpo.stop, gpo.rescore) on a buffer.
function M.command(name, bufnr)
  with_client(bufnr, function(buf, client)
    local params = { command = name, arguments = { vim.uri_from_bufnr(buf) } }
    call(client, 'request', 'workspace/executeCommand', params, function(err)
      if err then
        notify(name .. ' failed: ' .. (err.message or vim.inspect(err)), vim.log.levels.ERROR)
      end
    end, buf)
  end)
end

-- Apply the GPO suggestion: ask for code actions, resolve the apply action, apply its edit.
local function apply(bufnr, client, done)
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
  call(client, 'request', 'textDocument/codeAction', params, function(err, actions)
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
    call(client, 'request', 'codeAction/resolve', chosen, function(resolve_err, resolved)
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

function M.apply(bufnr, done)
  with_client(bufnr, function(buf, client)
    apply(buf, client, done)
  end)
end

-- Tell the servers that an example file was saved (the server asks for no file watching).
function M.example_saved(path)
  local uri = vim.uri_from_fname(path)
  for root, client in pairs(running()) do
    if vim.startswith(path, root .. '/') then
      call(client, 'notify', 'workspace/didChangeWatchedFiles',
        { changes = { { uri = uri, type = 2 } } })
    end
  end
end

-- The running clients' ids by root folder.
function M.roots()
  local out = {}
  for root, client in pairs(running()) do
    out[root] = client.id
  end
  return out
end

return M
