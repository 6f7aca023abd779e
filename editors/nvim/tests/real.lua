-- Headless check of the gpo plugin against the real `gpo lsp` (and the daemon it starts):
-- a broken prompt gets its diagnostic, a good one is optimized (picked from
-- vim.lsp.buf.code_action(), as a user would) with its progress reaching Neovim's
-- progress store, hovered, and the suggestion is applied through the code action;
-- the frontmatter stays as it was.
-- Run: GPO_TEST_DIR=... GPO_TEST_PYTHON=... nvim --headless -u NONE -i NONE -n \
--      -c 'luafile editors/nvim/tests/real.lua'   (tests/test_nvim_real.py does)
local here = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h')
local helpers = dofile(here .. '/helpers.lua')
local dir, check, finish = helpers.start('nvim with gpo lsp')
local WAIT = 90000

local gpo = require('gpo')
gpo.setup({
  cmd = { os.getenv('GPO_TEST_PYTHON'), '-m', 'gpo_server.cli', 'lsp' },
  settings = { budget = { initial = 30, final = 10 } },
})

-- Titles of the work-done progress Neovim got: what status-line plugins show.
-- 0.10+ fires LspProgress with the message; 0.7-0.9 fire User LspProgressUpdate
-- and keep the progress in client.messages.
local progress = {}
if vim.fn.has('nvim-0.10') == 1 then
  vim.api.nvim_create_autocmd('LspProgress', {
    callback = function(args)
      local value = args.data and args.data.params and args.data.params.value
      if type(value) == 'table' and value.title then
        progress[value.title] = true
      end
    end,
  })
else
  vim.api.nvim_create_autocmd('User', {
    pattern = 'LspProgressUpdate',
    callback = function()
      for _, client in pairs(vim.lsp.get_active_clients()) do
        for _, p in pairs(client.messages and client.messages.progress or {}) do
          if p.title then
            progress[p.title] = true
          end
        end
      end
    end,
  })
end

local function diagnostics(bufnr, severity)
  return vim.diagnostic.get(bufnr, { severity = severity })
end

-- A broken prompt: the template error at its line (0-based 4 = the file's line 5).
vim.cmd('edit ' .. dir .. '/ws/broken.prompt')
local broken = vim.api.nvim_get_current_buf()
check(vim.bo[broken].filetype == 'dotprompt', 'filetype dotprompt')
local got_error = vim.wait(WAIT, function()
  return #diagnostics(broken, vim.diagnostic.severity.ERROR) > 0
end, 50)
if check(got_error, 'timed out waiting for the broken prompt\'s diagnostic') then
  local d = diagnostics(broken, vim.diagnostic.severity.ERROR)[1]
  check(d.lnum == 4, 'error on line 4, got ' .. d.lnum)
  check(d.message:find('template error', 1, true) ~= nil, 'template error: ' .. d.message)
end

-- The good prompt: optimize, wait for the "better prompt ready" note, hover, apply.
vim.cmd('edit ' .. dir .. '/ws/capitals.prompt')
local buf = vim.api.nvim_get_current_buf()
local before = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
check(vim.wait(WAIT, function()
  local client = gpo.client_for(buf)
  -- server_capabilities is set once the server answered initialize.
  return client ~= nil and client.server_capabilities ~= nil
    and helpers.attached(buf)[client.id] ~= nil
end, 50), 'client attached and initialized')

-- Optimize from the code action menu: pick the action that runs gpo.optimize.
local offered = {}
local select = vim.ui.select
vim.ui.select = function(items, opts, on_choice)
  local chosen
  for _, item in ipairs(items) do
    local action = item.action or item[2] -- 0.10+: { action, ctx }; before: { client_id, action }
    local command = type(action.command) == 'table' and action.command.command or action.command
    table.insert(offered, tostring(command or action.title))
    if command == 'gpo.optimize' then
      chosen = item
    end
  end
  vim.ui.select = select
  on_choice(chosen)
end
vim.lsp.buf.code_action()
check(vim.wait(WAIT, function()
  return vim.ui.select == select
end, 50), 'the code action menu opened')
check(vim.tbl_contains(offered, 'gpo.optimize') and vim.tbl_contains(offered, 'gpo.rescore'),
  'code actions offered: ' .. table.concat(offered, ', '))

local ready = vim.wait(WAIT, function()
  return #diagnostics(buf, vim.diagnostic.severity.INFO) > 0
end, 50)
if not check(ready, 'timed out waiting for the suggestion diagnostic') then
  return finish()
end
local note = diagnostics(buf, vim.diagnostic.severity.INFO)[1]
check(note.message:find('^GPO: %+100 pts on dev, %d+ words') ~= nil, 'note: ' .. note.message)
check(note.lnum == 8, 'note on the body\'s first line, got ' .. note.lnum)

check(progress['GPO: optimizing capitals.prompt'],
  'job progress reached Neovim: ' .. table.concat(vim.tbl_keys(progress), ', '))

local params = {
  textDocument = { uri = vim.uri_from_bufnr(buf) },
  position = { line = 8, character = 1 },
}
local answers = vim.lsp.buf_request_sync(buf, 'textDocument/hover', params, WAIT)
local hover = ''
for _, answer in pairs(answers or {}) do
  if answer.result and answer.result.contents then
    hover = answer.result.contents.value or ''
  end
end
check(hover:find('ready: Apply GPO suggestion', 1, true) ~= nil, 'hover: ' .. hover)

local applied
gpo.apply(buf, function(ok)
  applied = ok
end)
check(vim.wait(WAIT, function()
  return applied ~= nil
end, 50), 'apply finished')
check(applied == true, 'apply succeeded')
local after = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
for i = 1, 8 do
  check(after[i] == before[i], 'frontmatter line ' .. i .. ' unchanged: ' .. tostring(after[i]))
end
check(after[9] == 'Name the capital city of the country.', 'body edited: ' .. tostring(after[9]))
check(after[10] == before[10] and after[11] == before[11], 'rest of the body kept')
check(vim.bo[buf].modified, 'the edit is in the buffer, not yet saved')
check(vim.wait(WAIT, function()
  return #diagnostics(buf, vim.diagnostic.severity.INFO) == 0
end, 50), 'the note goes once the suggestion is applied')
finish()
