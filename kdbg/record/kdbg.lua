-- kdbg's fields in Wireshark and tshark: a post-dissector for the pcapng that
-- 'kdbg watch --pcap' and 'kdbg report FILE --pcap' write (docs/record.md).
--
-- Each drop's packet carries two comments. The second is "kdbg " and a flat JSON
-- object of the drop's facts; this turns it into kdbg.* fields, so a display filter
-- such as  kdbg.reason == "NETFILTER_DROP"  or  kdbg.netns == 4026532528  picks
-- drops. A comment is what Wireshark 4.0's Lua can read of a packet's pcapng block;
-- the dissector needs nothing else (Lua 5.2, no module).
--
-- Installed by scripts/setup.sh into Wireshark's global Lua plugin folder
-- ('tshark -G folders'); or load it by hand: tshark -X lua_script:kdbg.lua ...

-- Loaded once: a second load (installed, and given again with -X lua_script:, or in
-- both the global and the personal folder) finds its protocol registered and stops
-- there, rather than failing with a Lua error. (Each script has its own globals.)
local made, kdbg = pcall(Proto, "kdbg", "kdbg packet drop")
if not made then
  if tostring(kdbg):find("two protocols", 1, true) then return end
  error(kdbg)
end

-- name in the JSON object -> its field (kdbg.NAME), in the order the tree shows them
local ORDER = {
  "reason", "location", "symbol", "file", "line", "netns", "netns_name", "ifname",
  "ifindex", "cause", "cause_established", "hook", "rule", "rule_handle", "mark",
  "ct_state", "ct_reply", "ct_zone", "ct_mark", "ct_status", "ct_orig_family",
  "ct_orig_proto", "ct_orig_saddr", "ct_orig_daddr", "ct_orig_saddr6", "ct_orig_daddr6",
  "ct_orig_sport", "ct_orig_dport", "ct_orig_icmp_id", "ct_orig_icmp_type",
  "ct_orig_icmp_code", "ct_reply_family", "ct_reply_proto", "ct_reply_saddr",
  "ct_reply_daddr", "ct_reply_saddr6", "ct_reply_daddr6", "ct_reply_sport",
  "ct_reply_dport", "ct_reply_icmp_id", "ct_reply_icmp_type", "ct_reply_icmp_code",
}
local F = {
  reason = ProtoField.string("kdbg.reason", "Drop reason"),
  location = ProtoField.string("kdbg.location", "Location (symbol+offset [module])"),
  symbol = ProtoField.string("kdbg.symbol", "Function"),
  file = ProtoField.string("kdbg.file", "Source file"),
  line = ProtoField.uint32("kdbg.line", "Source line"),
  netns = ProtoField.uint32("kdbg.netns", "Network namespace inode"),
  netns_name = ProtoField.string("kdbg.netns_name", "Network namespace name"),
  ifname = ProtoField.string("kdbg.ifname", "Interface"),
  ifindex = ProtoField.uint32("kdbg.ifindex", "Interface index"),
  cause = ProtoField.string("kdbg.cause", "Cause"),
  cause_established = ProtoField.bool("kdbg.cause_established", "Cause established"),
  hook = ProtoField.string("kdbg.hook", "Netfilter hook"),
  rule = ProtoField.string("kdbg.rule", "Rule (or chain policy)"),
  rule_handle = ProtoField.uint32("kdbg.rule_handle", "Rule handle"),
  mark = ProtoField.uint32("kdbg.mark", "Packet mark", base.HEX),
  ct_state = ProtoField.string("kdbg.ct_state", "Conntrack state"),
  ct_zone = ProtoField.uint16("kdbg.ct_zone", "Conntrack zone"),
  ct_mark = ProtoField.uint32("kdbg.ct_mark", "Conntrack mark", base.HEX),
  ct_reply = ProtoField.bool("kdbg.ct_reply", "Conntrack reply direction"),
  ct_status = ProtoField.uint32("kdbg.ct_status", "Conntrack status (IPS_* bits)", base.HEX),
  -- the entry's original-direction tuple (where the connection began, before NAT)
  ct_orig_family = ProtoField.string("kdbg.ct_orig_family", "Conntrack original family"),
  ct_orig_proto = ProtoField.string("kdbg.ct_orig_proto", "Conntrack original protocol"),
  ct_orig_saddr = ProtoField.ipv4("kdbg.ct_orig_saddr", "Conntrack original source"),
  ct_orig_daddr = ProtoField.ipv4("kdbg.ct_orig_daddr", "Conntrack original destination"),
  ct_orig_saddr6 = ProtoField.ipv6("kdbg.ct_orig_saddr6", "Conntrack original source"),
  ct_orig_daddr6 = ProtoField.ipv6("kdbg.ct_orig_daddr6", "Conntrack original destination"),
  ct_orig_sport = ProtoField.uint16("kdbg.ct_orig_sport", "Conntrack original source port"),
  ct_orig_dport = ProtoField.uint16("kdbg.ct_orig_dport",
                                    "Conntrack original destination port"),
  ct_orig_icmp_id = ProtoField.uint16("kdbg.ct_orig_icmp_id", "Conntrack original ICMP id"),
  ct_orig_icmp_type = ProtoField.uint8("kdbg.ct_orig_icmp_type",
                                       "Conntrack original ICMP type"),
  ct_orig_icmp_code = ProtoField.uint8("kdbg.ct_orig_icmp_code",
                                       "Conntrack original ICMP code"),
}
-- the reply-direction tuple (what a reply looks like, after NAT): the same fields
for _, f in ipairs({
  { "family", ProtoField.string, "family" }, { "proto", ProtoField.string, "protocol" },
  { "saddr", ProtoField.ipv4, "source" }, { "daddr", ProtoField.ipv4, "destination" },
  { "saddr6", ProtoField.ipv6, "source" }, { "daddr6", ProtoField.ipv6, "destination" },
  { "sport", ProtoField.uint16, "source port" },
  { "dport", ProtoField.uint16, "destination port" },
  { "icmp_id", ProtoField.uint16, "ICMP id" }, { "icmp_type", ProtoField.uint8, "ICMP type" },
  { "icmp_code", ProtoField.uint8, "ICMP code" },
}) do
  F["ct_reply_" .. f[1]] = f[2]("kdbg.ct_reply_" .. f[1], "Conntrack reply " .. f[3])
end
-- The tuples' addresses are text in the comment; an IPv6 one goes to the *6 field
-- (as Wireshark keeps ip.src and ipv6.src apart), each as an address a filter compares.
local ADDRESSES = { ct_orig_saddr = "ct_orig_saddr6", ct_orig_daddr = "ct_orig_daddr6",
                    ct_reply_saddr = "ct_reply_saddr6", ct_reply_daddr = "ct_reply_daddr6" }

local function address_fields(rec)
  for name, name6 in pairs(ADDRESSES) do
    local text = rec[name]
    if type(text) == "string" and text:find(":", 1, true) then
      rec[name], rec[name6] = nil, Address.ipv6(text)
    elseif type(text) == "string" then
      rec[name] = Address.ip(text)
    end
  end
end
local list = {}
for _, name in ipairs(ORDER) do list[#list + 1] = F[name] end
kdbg.fields = list

local bad_comment = ProtoExpert.new("kdbg.bad_comment", "kdbg comment not understood",
                                    expert.group.MALFORMED, expert.severity.WARN)
kdbg.experts = { bad_comment }

local comment_field = Field.new("frame.comment")

-- A flat JSON object: string, integer, true/false/null values. Returns a table, or
-- nil and what went wrong.
local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f",
                  n = "\n", r = "\r", t = "\t" }

local function utf8_char(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then
    return string.char(0xC0 + math.floor(cp / 0x40), 0x80 + cp % 0x40)
  end
  return string.char(0xE0 + math.floor(cp / 0x1000), 0x80 + math.floor(cp / 0x40) % 0x40,
                     0x80 + cp % 0x40)
end

local function read_string(s, i)  -- s:sub(i, i) is the opening quote
  local out, j = {}, i + 1
  while true do
    local c = s:sub(j, j)
    if c == "" then return nil, "unterminated string" end
    if c == '"' then return table.concat(out), j + 1 end
    if c == "\\" then
      local e = s:sub(j + 1, j + 1)
      if e == "u" then
        local hex = s:sub(j + 2, j + 5)
        if not hex:match("^%x%x%x%x$") then return nil, "bad \\u escape" end
        out[#out + 1] = utf8_char(tonumber(hex, 16))
        j = j + 6
      elseif ESCAPES[e] then
        out[#out + 1] = ESCAPES[e]
        j = j + 2
      else
        return nil, "bad escape"
      end
    else
      out[#out + 1] = c
      j = j + 1
    end
  end
end

local function parse_object(s)
  local obj, i = {}, s:find("%S")
  if s:sub(i, i) ~= "{" then return nil, "not an object" end
  i = s:find("%S", i + 1)
  if s:sub(i, i) == "}" then return obj end
  while true do
    if s:sub(i, i) ~= '"' then return nil, "expected a key" end
    local key, value
    key, i = read_string(s, i)
    if not key then return nil, i end
    i = s:find("%S", i)
    if s:sub(i, i) ~= ":" then return nil, "expected ':'" end
    i = s:find("%S", i + 1)
    local c = s:sub(i, i)
    if c == '"' then
      value, i = read_string(s, i)
      if value == nil then return nil, i end
    else
      local word = s:match("^[%w%.%-%+]+", i)
      if not word then return nil, "bad value" end
      if word == "true" then value = true
      elseif word == "false" then value = false
      elseif word == "null" then value = nil
      else
        value = tonumber(word)
        if value == nil then return nil, "bad value " .. word end
      end
      i = i + #word
    end
    obj[key] = value
    i = s:find("%S", i)
    c = s:sub(i, i)
    if c == "}" then return obj end
    if c ~= "," then return nil, "expected ',' or '}'" end
    i = s:find("%S", i + 1)
  end
end

function kdbg.dissector(tvb, pinfo, tree)
  for _, fi in ipairs({ comment_field() }) do
    local text = tostring(fi.value)
    if text:sub(1, 5) == "kdbg " then
      local rec, err = parse_object(text:sub(6))
      local title = rec and ("kdbg: " .. tostring(rec.reason) .. " at " ..
                             tostring(rec.location)) or "kdbg"
      local sub = tree:add(kdbg, title)
      if not rec then
        sub:add_proto_expert_info(bad_comment, "kdbg comment not understood: " .. err)
      else
        address_fields(rec)
        for _, name in ipairs(ORDER) do
          if rec[name] ~= nil then sub:add(F[name], rec[name]) end
        end
        pinfo.cols.info:append("  [kdbg: " .. tostring(rec.reason) .. "]")
      end
    end
  end
end

register_postdissector(kdbg)
